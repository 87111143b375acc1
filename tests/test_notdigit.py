"""'Not a digit': the detector that refuses junk, shipped beside the model, in every answer;
trained by `digitrec train-notdigit`, found beside its digit model, else the shipped one."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import encode, run_cli
from digitrec import outliers
from digitrec.checkpoint import read_meta
from digitrec.errors import CheckpointError
from digitrec.models import build_model
from digitrec.notdigit import NotDigit
from digitrec.predictor import Predictor
from digitrec.runs import companion_or_shipped, shipped_model_path

SHIPPED_DETECTOR = shipped_model_path().with_name("default.notdigit.safetensors")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_model_path())


def test_junk_of_every_kind_is_answered_not_a_digit_with_no_digit(predictor):
    """Seeds neither the detector's training (7000+) nor the benchmark (1000+) use."""
    for i, (kind, render) in enumerate(outliers.KINDS.items()):
        rng = np.random.default_rng([5, 9000 + i])
        preds = predictor.predict([render(rng) for _ in range(40)])
        flagged = [p for p in preds if p.not_a_digit]
        assert len(flagged) >= 28, (kind, len(flagged))  # validation: 85-100% of each kind
        for p in flagged:
            answer = p.to_dict()
            assert answer["not_a_digit"] and answer["digit"] is None and answer["label"] == ""
            assert answer["uncertain"] and not answer["blank"]
            assert abs(sum(answer["probabilities"]) - 1) < 1e-5  # what the model made of it


def test_digits_scanned_and_drawn_big_or_small_are_still_read(predictor, mnist):
    digits = mnist.test_images[:300].numpy()
    preds = predictor.predict(list(digits))
    assert sum(p.not_a_digit for p in preds) <= 2  # validation: 0.2% of digits
    right = [p.digit == y for p, y in zip(preds, mnist.test_labels[:300].tolist(), strict=True)]
    assert np.mean(right) >= 0.99
    # the same digits redrawn on the pad, thin and thick, 60 to 250 px tall
    from digitrec.notdigit import drawn

    rng = np.random.default_rng(1)
    pads = [encode((drawn(d, rng) * 255).astype(np.uint8)) for d in digits[:100]]
    assert sum(p.not_a_digit for p in predictor.predict(pads)) <= 2


def test_the_detector_ships_with_its_threshold_and_validation_figures():
    meta = read_meta(SHIPPED_DETECTOR)
    record = meta["not_digit"]
    assert meta["classes"] == ["digit", "not a digit"] and record["threshold"] > 0
    val = record["validation"]
    assert val["digits_flagged"] <= 0.0025  # the share it was chosen for, on validation
    assert min(v for k, v in val.items() if k != "digits_flagged") >= 0.6  # scribbles: 63%
    assert Predictor.load(shipped_model_path()).not_digit_detector().path == SHIPPED_DETECTOR


def test_models_of_other_classes_have_no_detector():
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"]  # fmt: skip
    fashion = Predictor(build_model("fast", 10), {"model": "fast", "classes": names})
    assert fashion.not_digit_detector() is None
    pred = fashion.predict([np.eye(28, dtype=np.float32)])[0]
    assert not pred.not_a_digit and pred.digit is not None
    off = Predictor(build_model("fast", 10), {"model": "fast"}, not_digit=False)
    assert off.not_digit_detector() is None


def test_a_detector_beside_the_model_is_used_before_the_shipped_one(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    assert companion_or_shipped(base, "notdigit") == SHIPPED_DETECTOR
    shutil.copy(SHIPPED_DETECTOR, tmp_path / "m.notdigit.safetensors")
    detector = Predictor.load(base, backend="torch").not_digit_detector()
    assert detector is not None and detector.path == tmp_path / "m.notdigit.safetensors"
    x = torch.rand(3, 28, 28).numpy()
    assert detector.scores(x).shape == (3,) and detector.flags(x).dtype == bool


def test_a_checkpoint_without_a_threshold_is_not_a_detector(tmp_path):
    with pytest.raises(Exception, match="not a 'not a digit' detector"):
        NotDigit.load(shipped_model_path())


def test_a_damaged_detector_is_refused_when_the_model_loads_not_at_each_answer(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    (tmp_path / "m.notdigit.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"m\.notdigit\.safetensors is not a readable"):
        Predictor.load(base, backend="torch")


@pytest.mark.slow
def test_train_notdigit_writes_a_detector_that_predict_finds(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    args = ["train-notdigit", "--model-path", str(base), "--digits", "600", "--junk", "40",
            "--epochs", "1", "--workers", "1", "--skip", "symbol"]  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "m.notdigit.safetensors"
    assert "symbol (never trained on)" in done.stdout and str(out) in done.stdout
    record = read_meta(out)["not_digit"]
    assert record["skipped_kind"] == "symbol" and record["digits"] == 600
    assert set(record["validation"]) == {
        "digits_flagged", "fashion_flagged", *(f"{k}_flagged" for k in outliers.KINDS)
    }  # fmt: skip
    json.dumps(record)  # the provenance is plain JSON
    assert Predictor.load(base, backend="torch").not_digit_detector().path == out

    again = run_cli(*args)  # never overwritten without --force
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run_cli(*args[:-1], "teapot", "--force")
    assert bad.returncode == 2 and "--skip teapot: choose one of scribble" in bad.stderr


@pytest.mark.slow
def test_predict_says_not_a_digit_for_a_scribble(tmp_path):
    scribble = tmp_path / "scribble.png"
    scribble.write_bytes(outliers.scribble(np.random.default_rng([5, 9000])))
    done = run_cli("predict", str(scribble), "--model-path", str(shipped_model_path()))
    assert done.returncode == 0, done.stderr
    assert f"{scribble}: not a digit" in done.stdout
    as_json = run_cli("predict", str(scribble), "--json", "--model-path", str(shipped_model_path()))
    record = json.loads(as_json.stdout)[0]
    assert record["not_a_digit"] is True and record["digit"] is None
