import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.models import MODELS, build_model, count_parameters, resolve_device


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch", [1, 7])
def test_every_model_maps_images_to_logits(name, batch):
    model = build_model(name).eval()
    out = model(torch.rand(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_models_train_and_carry_their_normalization(name):
    model = build_model(name, num_classes=10, mean=0.5, std=0.25)
    state = model.state_dict()
    assert state["0.mean"].item() == 0.5 and state["0.std"].item() == 0.25
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_parameter_counts_are_what_the_zoo_says():
    counts = {name: count_parameters(build_model(name)) for name in MODELS}
    # mlp: 784*512+512 + 512*256+256 + 256*10+10
    assert counts["mlp"] == 535_818
    assert counts["fast"] < counts["mid"] < counts["cnn"] < counts["cnn4"] < counts["best"]


def test_unknown_model_and_device():
    with pytest.raises(DigitrecError, match="choose one of"):
        build_model("resnet")
    with pytest.raises(DigitrecError, match="Unknown device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DigitrecError, match="no CUDA"):
            resolve_device("cuda")
