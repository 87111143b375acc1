import json

import pytest
import torch
from safetensors.torch import save_file

from digitrec.checkpoint import load_model, load_tree, read_meta, save_model, save_tree
from digitrec.errors import CheckpointError
from digitrec.models import build_model

META = {
    "model": "fast",
    "classes": [str(i) for i in range(10)],
    "normalization": {"mean": 0.1307, "std": 0.3081},
    "metrics": {"val_acc": 0.5},
}


def test_model_round_trip(tmp_path):
    model = build_model("fast").eval()
    with torch.no_grad():  # give batch norm non-default statistics too
        model(torch.rand(8, 1, 28, 28))
    path = tmp_path / "m.safetensors"
    save_model(path, model, META)
    loaded, meta = load_model(path)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta["metrics"] == {"val_acc": 0.5} and meta["format"] == "digitrec-checkpoint"
    assert not loaded.training
    assert path.read_bytes()[:2] != b"\x80\x04"  # not a pickle
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        read_meta(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_meta(tmp_path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, build_model("fast"), META)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_foreign_safetensors_without_metadata(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not saved by digitrec"):
        load_model(path)


def test_corrupt_digitrec_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"digitrec": '{"model": "fast",'})
    with pytest.raises(CheckpointError, match="corrupt digitrec metadata"):
        load_model(path)


def test_architecture_mismatch_names_what_differs(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, build_model("fast"), {**META, "model": "cnn"})
    with pytest.raises(CheckpointError, match="does not match the architecture") as err:
        load_model(path)
    assert "missing" in str(err.value) and "unexpected" in str(err.value)


def test_unknown_model_name_in_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, build_model("fast"), {**META, "model": "transformer"})
    with pytest.raises(CheckpointError, match="does not know"):
        load_model(path)


def test_training_state_round_trip(tmp_path):
    model = build_model("mlp")
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(3)
    tree = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "history": [{"epoch": 1, "val_acc": 0.9}],
        "epoch": 1,
        "none": None,
    }
    save_tree(tmp_path / "state.safetensors", tree)
    back = load_tree(tmp_path / "state.safetensors")
    opt2 = torch.optim.AdamW(build_model("mlp").parameters(), lr=0.01)
    opt2.load_state_dict(back["optimizer"])
    for a, b in zip(
        opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(), strict=True
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert back["scheduler"] == json.loads(json.dumps(back["scheduler"]))  # plain values only
    assert torch.equal(back["generator"], gen.get_state())
    assert back["history"] == tree["history"] and back["none"] is None


def test_missing_training_state(tmp_path):
    with pytest.raises(CheckpointError, match="No resumable training state"):
        load_tree(tmp_path / "state.safetensors")
