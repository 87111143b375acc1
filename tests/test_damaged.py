"""Damaged and crafted artifacts, as an unlucky user (or an attacker) hands them over:
each is refused with one `error:` line naming the file, never NaN and never a traceback."""

from __future__ import annotations

import io
import json
import shutil
import struct

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import run_cli
from digitrec.checkpoint import read_meta
from digitrec.cli import main
from digitrec.errors import CheckpointError
from digitrec.export import OnnxModel
from digitrec.predictor import Predictor
from digitrec.runs import best_run, list_runs, shipped_model_path

SHIPPED = shipped_model_path()


@pytest.fixture
def digit_png(mnist, tmp_path):
    path = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.test_images[0].numpy()).save(path)
    return path


def flipped(src, dest, where: float, value: bytes) -> None:
    """``src`` copied to ``dest`` with bytes overwritten at a share ``where`` of its tensor
    data (after the header, which safetensors checks itself)."""
    data = bytearray(src.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    at = start + int((len(data) - start) * where) // 4 * 4
    data[at : at + len(value)] = value
    dest.write_bytes(bytes(data))


def error_line(capsys, *args: str) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize(
    "value, kind",
    [(struct.pack("<f", float("nan")), "a NaN"), (b"\x01", "a quiet flip of one low byte")],
)
def test_flipped_weight_bytes_are_refused_by_every_command(
    tmp_path, digit_png, capsys, value, kind
):
    """They loaded: `predict` said `nan%`, `--json` printed NaN, `evaluate` scored 9.8%,
    and `serve` said ready and answered every prediction with a 500."""
    bad = tmp_path / "model.safetensors"  # alone: no ONNX export beside it
    flipped(SHIPPED, bad, 0.5, value)
    for args in (
        ("predict", str(digit_png), "--model-path", str(bad)),
        ("predict", str(digit_png), "--json", "--model-path", str(bad)),
        ("evaluate", str(bad)),
    ):
        assert "is damaged: its weights do not match the hash" in error_line(capsys, *args), kind
    r = run_cli("serve", "--model-path", str(bad), "--port", "0", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is damaged" in r.stderr and "open http" not in r.stdout


def test_a_checkpoint_without_a_hash_is_still_refused_for_nan_weights(tmp_path, capsys):
    """Checkpoints saved before the hash was recorded load as they are, unless non-finite."""
    meta = read_meta(SHIPPED)
    del meta["tensors_sha256"]
    tensors = load_file(SHIPPED)
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 100)
    tensors[name].view(-1)[7] = float("inf")
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"digitrec": json.dumps(meta)})
    assert f"NaN or infinite weights in {name}" in error_line(capsys, "evaluate", str(old))


@pytest.mark.parametrize(
    "record, says",
    [
        ([1, 2], "the record is a list, not an object"),
        ({"normalization": {"mean": "0.13", "std": 0.3}}, "normalization.mean is a string"),
        ({"normalization": {"mean": 0.13, "std": 0}}, "normalization.std <= 0"),
        ({"classes": "0123456789"}, "classes is a string, not a list"),
        ({"test_accuracy": "99%"}, "test_accuracy is a string, not a number"),
        ({"model": None}, "model is missing or null"),
        ({"members": [{"model": 3}]}, "members[0].model is a whole number, not a string"),
    ],
)
def test_crafted_metadata_is_refused_naming_the_field(tmp_path, record, says):
    meta = read_meta(SHIPPED)
    crafted = {**meta, **record} if isinstance(record, dict) else record
    path = tmp_path / "crafted.safetensors"
    save_file(load_file(SHIPPED), str(path), metadata={"digitrec": json.dumps(crafted)})
    with pytest.raises(CheckpointError, match="damaged") as err:
        Predictor.load(path, backend="torch")
    assert str(path) in str(err.value) and says in str(err.value)


def test_a_damaged_onnx_export_is_refused_and_auto_falls_back_to_the_checkpoint(tmp_path):
    ckpt = tmp_path / "default.safetensors"
    shutil.copy(SHIPPED, ckpt)
    onnx = ckpt.with_suffix(".onnx")
    data = bytearray(SHIPPED.with_suffix(".onnx").read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the weights, which ONNX Runtime would run as read
    onnx.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: its content does not match"):
        OnnxModel(onnx)
    with pytest.raises(CheckpointError, match="is damaged"):
        Predictor.load(ckpt, backend="onnx")
    assert Predictor.load(ckpt).backend == "torch"  # auto: the sound checkpoint itself


def test_the_shipped_model_and_its_exports_carry_their_hashes():
    assert len(read_meta(SHIPPED)["tensors_sha256"]) == 64
    for p in (SHIPPED.with_suffix(".onnx"), SHIPPED.with_name("default.int8.onnx")):
        assert len(OnnxModel(p).meta["content_sha256"]) == 64


def damaged_runs(root):
    """Three runs a crash or a hand edit could leave, and one sound run."""
    for name, text in [
        ("a-list", "[1, 2]"),
        ("null-settings", '{"settings": null, "status": "complete"}'),
        ("cut-short", '{"settings": {"model": "fast", "data'),
    ]:
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(text)
    sound = root / "sound"
    sound.mkdir()
    (sound / "config.json").write_text(
        json.dumps({"settings": {"model": "best", "dataset": "mnist"}, "status": "complete"})
    )
    (sound / "metrics.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                       "1,0.1,0.9,0.1,0.99,0.001,1.0\n")  # fmt: skip
    shutil.copy(SHIPPED, sound / "best.safetensors")
    return sound


def test_damaged_runs_are_listed_as_damaged_and_never_picked(tmp_path, capsys, digit_png):
    """They gave tracebacks in `runs`, in `predict` (the default model's lookup) and in
    `serve`; or, when skipped, vanished from the listing without a word."""
    root = tmp_path / "runs"
    sound = damaged_runs(root)
    assert main(["runs", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "a-list" in out and "the record is a list, not an object" in out
    assert "null-settings" in out and "settings is missing or null" in out
    assert "cut-short" in out and "not readable JSON" in out
    assert out.index("sound") < out.index("a-list")  # the sound run first
    assert [r.path.name for r in list_runs(root) if not r.damaged] == ["sound"]
    assert best_run(root).path == sound  # the one the shipped model is compared with
    assert "the best run sound" in out.splitlines()[-1]
    assert main(["predict", str(digit_png), "--runs-dir", str(root)]) == 0
    assert "shipped default" in capsys.readouterr().out  # a run below it does not replace it
    says = error_line(capsys, "train", "--resume", str(root / "null-settings"))
    assert f"{root / 'null-settings' / 'config.json'} is damaged: settings is missing" in says


def test_a_model_computing_nan_is_refused_not_answered(tmp_path, digit_png):
    """The last guard: finite but huge weights (a checkpoint from before the hash) overflow
    to NaN; the Predictor says so instead of answering NaN."""
    meta = read_meta(SHIPPED)
    del meta["tensors_sha256"]
    tensors = {k: t * 1e30 if t.ndim > 1 else t for k, t in load_file(SHIPPED).items()}
    path = tmp_path / "huge.safetensors"
    save_file(tensors, str(path), metadata={"digitrec": json.dumps(meta)})
    p = Predictor.load(path, backend="torch")
    with pytest.raises(CheckpointError, match="NaN or infinite outputs"):
        p.predict([digit_png])
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, "PNG")
    assert p.predict([buf.getvalue()])[0].blank  # a blank image never reaches the model
