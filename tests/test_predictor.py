import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import untrained_with_statistics
from digitrec.errors import CheckpointError, ImageError
from digitrec.models import MODELS, inference_module
from digitrec.predictor import Predictor
from digitrec.runs import resolve_model_path, shipped_model_path


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.load(trained_run.run_dir / "best.safetensors")


def test_predicts_real_digits(predictor, mnist):
    preds = predictor.predict([mnist.test_images[i].numpy() for i in range(50)])
    correct = sum(p.digit == int(mnist.test_labels[i]) for i, p in enumerate(preds))
    assert correct >= 47
    p = preds[0]
    assert len(p.probabilities) == 10 and abs(sum(p.probabilities) - 1) < 1e-5
    assert p.confidence == max(p.probabilities) and p.image.shape == (28, 28)
    assert p.top(3)[0] == (p.digit, p.confidence)


def test_blank_image_is_no_digit(predictor):
    [p] = predictor.predict([np.full((100, 100), 255, np.uint8)])
    assert p.blank and p.uncertain and p.digit is None


def test_bad_image_raises_image_error(predictor):
    with pytest.raises(ImageError):
        predictor.predict([b"nope"])


def test_concurrent_use_gives_each_caller_its_own_answer(predictor, mnist):
    images = [mnist.test_images[i].numpy() for i in range(40)]
    expected = [p.probabilities for p in predictor.predict(images)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda im: predictor.predict_one(im).probabilities, images))
    assert np.allclose(got, expected, atol=1e-6)


def test_resolution_order(trained_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run.run_dir, runs / "r1")
    explicit = trained_run.run_dir / "last.safetensors"
    monkeypatch.setenv("DIGITREC_MODEL", str(trained_run.run_dir / "best.safetensors"))
    assert resolve_model_path(explicit, str(runs)) == (explicit, "--model-path")
    path, source = resolve_model_path(None, str(runs))
    assert source == "DIGITREC_MODEL"
    monkeypatch.delenv("DIGITREC_MODEL")
    path, source = resolve_model_path(None, str(tmp_path / "empty"))
    assert (path, source) == (shipped_model_path(), "shipped default")
    # a run directory works as --model-path too
    assert resolve_model_path(runs / "r1", None)[0] == runs / "r1" / "best.safetensors"
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        resolve_model_path(tmp_path / "missing.safetensors", None)


def test_a_run_replaces_the_shipped_model_only_when_it_beats_it_on_the_same_split(
    trained_run, tmp_path
):
    """`make train` then `make run`: a one-epoch run does not silently replace the shipped
    model; one that validates higher on the same split does; another split is not compared."""
    from digitrec.runs import choose_model, shipped_validation

    runs = tmp_path / "runs"
    shutil.copytree(trained_run.run_dir, runs / "r1")
    shipped_acc, split = shipped_validation()
    assert split == (5000, 0) and shipped_acc > 0.99
    worse = choose_model(None, str(runs))
    assert (worse.path, worse.source) == (shipped_model_path(), "shipped default")
    assert "the best run r1 has" in worse.why and f"--model-path {runs / 'r1'}" in worse.why
    metrics = runs / "r1" / "metrics.csv"
    rows = metrics.read_text().splitlines()
    cols = rows[0].split(",")
    last = rows[-1].split(",")
    last[cols.index("val_acc")] = f"{shipped_acc + 0.001:.6f}"
    metrics.write_text("\n".join([*rows[:-1], ",".join(last)]) + "\n")
    better = choose_model(None, str(runs))
    assert better.path == runs / "r1" / "best.safetensors" and better.source == "best run (r1)"
    assert "above the shipped model's" in better.why
    config = json.loads((runs / "r1" / "config.json").read_text())
    config["settings"]["split_seed"] = 7
    (runs / "r1" / "config.json").write_text(json.dumps(config))
    other = choose_model(None, str(runs))
    assert other.source == "shipped default" and "cannot be compared" in other.why


def test_test_time_augmentation_averages_views(predictor, mnist):
    images = [mnist.test_images[i].numpy() for i in range(30)]
    plain = predictor.predict(images)
    tta = predictor.predict(images, tta=True)
    for p, q in zip(plain, tta, strict=True):
        assert abs(sum(q.probabilities) - 1) < 1e-5
        assert q.probabilities != p.probabilities  # really a different computation
    assert sum(p.digit == q.digit for p, q in zip(plain, tta, strict=True)) >= 28
    # the identity view alone would reproduce the plain prediction
    import torch

    from digitrec.augment import tta_views

    x = torch.from_numpy(tta[0].image)[None, None]
    views = tta_views(x, predictor._tta)
    assert torch.allclose(views[0], x, atol=1e-6) and len(views) == len(predictor._tta)


def test_large_batches_reach_the_model_in_bounded_calls(predictor, mnist, monkeypatch):
    """Any number of images, with or without views, goes to the model in calls of at most
    MAX_BATCH, and gives the answers it gives image by image."""
    from digitrec import predictor as module
    from digitrec.data import to_float

    monkeypatch.setattr(module, "MAX_BATCH", 16)
    seen = []
    run = predictor._run

    def recording(x):
        seen.append(len(x))
        return run(x)

    monkeypatch.setattr(predictor, "_run", recording)
    x = to_float(mnist.test_images[:37])
    for tta in (False, True):
        seen.clear()
        together = predictor.probabilities(x, tta=tta)
        assert together.shape == (37, 10) and max(seen) <= 16 and len(seen) > 1
        alone = torch.cat([predictor.probabilities(x[i : i + 1], tta=tta) for i in range(37)])
        assert torch.allclose(together, alone, atol=1e-5)
    assert predictor.probabilities(x[:0]).shape == (0, 10)


def test_onnx_runtime_batches_are_bounded_too(mnist, monkeypatch):
    """Without views, ONNX Runtime is called from numpy directly (no torch round trip):
    the same bound, and the same answers as image by image."""
    from digitrec import predictor as module
    from digitrec.data import to_float

    onnx = Predictor.load(shipped_model_path())
    assert onnx.backend == "onnx"
    monkeypatch.setattr(module, "MAX_BATCH", 16)
    seen = []
    run = onnx._run.run
    monkeypatch.setattr(onnx._run, "run", lambda x: seen.append(len(x)) or run(x))
    x = to_float(mnist.test_images[:37]).numpy()
    together = onnx._probabilities(x, tta=False)
    assert together.shape == (37, 10) and seen == [16, 16, 5]
    alone = np.concatenate([onnx._probabilities(x[i : i + 1], tta=False) for i in range(37)])
    assert np.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_every_accepted_file_format(predictor, mnist, tmp_path, fmt):
    from PIL import Image

    digit = mnist.test_images[0].numpy()  # a 7
    path = tmp_path / f"seven.{fmt.lower()}"
    Image.fromarray(255 - digit).resize((140, 140)).save(path, fmt)
    assert predictor.predict_one(path).digit == int(mnist.test_labels[0])


@pytest.mark.parametrize("name", list(MODELS))
def test_the_frozen_inference_model_gives_the_eager_models_answers(name):
    model = untrained_with_statistics(name)  # so batch norm folding is tested
    frozen = inference_module(model)
    assert frozen is not model  # compiled, not the eager fallback
    x = torch.rand(16, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(frozen(x), model(x), atol=1e-4)
