"""Calibrated confidence and a measured "not sure": fitted on validation, stored in the
checkpoint, applied alike by PyTorch and ONNX Runtime, never changing an answer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli, untrained_with_statistics
from digitrec.calibration import calibration_bins, fit, fit_temperature, threshold_for
from digitrec.checkpoint import read_meta, save_model
from digitrec.errors import CheckpointError
from digitrec.export import OnnxModel, export, onnx_path_for
from digitrec.predictor import Predictor
from digitrec.runs import read_config

META = {"model": "fast", "classes": [str(i) for i in range(10)]}


def overconfident(n: int = 20000, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z), and the logits a model three times too sure gives."""
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, 10, generator=g)
    labels = torch.multinomial(F.softmax(z, 1), 1, generator=g).squeeze(1)
    return scale * z, labels


def test_the_fitted_temperature_undoes_overconfidence_and_keeps_every_answer():
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    record = fit(logits, labels)
    assert record["val"]["ece_after"] < 0.02 < 0.1 < record["val"]["ece_before"]
    assert record["val"]["nll_after"] < record["val"]["nll_before"]
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_the_threshold_answers_as_many_as_the_allowed_risk_lets_it():
    conf = np.array([0.99, 0.98, 0.97, 0.9, 0.8])
    right = np.array([True, True, False, True, False])
    assert threshold_for(conf, right, max_risk=0.0) == 0.98
    assert threshold_for(conf, right, max_risk=0.34) == 0.9  # 1 wrong of 4 answered
    assert threshold_for(conf, right, max_risk=0.5) == 0.8
    # A tie is answered whole or not at all: no cut lies between 0.95 and 0.95.
    tied = np.array([0.99, 0.95, 0.95])
    assert threshold_for(tied, np.array([True, True, False]), max_risk=0.0) == 0.99
    assert threshold_for(np.array([0.7]), np.array([False]), max_risk=0.0) == 1.0  # none


def test_expected_calibration_error_known_answers():
    ece, bins = calibration_bins(np.ones(10), np.ones(10, dtype=bool))
    assert ece == 0.0 and sum(b["count"] for b in bins) == 10
    assert calibration_bins(np.full(10, 0.5), np.ones(10, dtype=bool))[0] == pytest.approx(0.5)
    half = np.array([True, True, False, False])
    assert calibration_bins(np.full(4, 0.9), half)[0] == pytest.approx(0.4)
    conf = np.repeat([0.5, 0.9], 10)  # confidence equal to accuracy in each bin
    right = np.array([True] * 5 + [False] * 5 + [True] * 9 + [False])
    assert calibration_bins(conf, right)[0] == pytest.approx(0.0, abs=1e-12)


def test_the_predictor_divides_by_the_checkpoints_temperature_and_reads_its_threshold(tmp_path):
    model = untrained_with_statistics("fast")
    path = tmp_path / "m.safetensors"
    save_model(path, model, {**META, "calibration": {"temperature": 2.5, "uncertain_below": 0.3}})
    p = Predictor.load(path, backend="torch")
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        expected = F.softmax(model(x) / 2.5, 1)
    assert torch.allclose(p.probabilities(x), expected, atol=1e-5)
    assert p.uncertain_below == 0.3
    assert Predictor.load(path, backend="torch", uncertain_below=0.8).uncertain_below == 0.8


@pytest.mark.parametrize("calibration", [{"temperature": -1.0, "uncertain_below": 0.5},
                                         {"temperature": "warm", "uncertain_below": 0.5},
                                         {"uncertain_below": 0.5}])  # fmt: skip
def test_a_damaged_calibration_record_is_refused_in_one_line(tmp_path, calibration):
    path = tmp_path / "m.safetensors"
    save_model(path, untrained_with_statistics("fast"), {**META, "calibration": calibration})
    with pytest.raises(CheckpointError, match=r"damaged.*temperature") as e:
        read_meta(path)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_finished_run_is_calibrated_on_its_validation_split(trained_run):
    meta = read_meta(trained_run.run_dir / "best.safetensors")
    c = meta["calibration"]
    assert c == read_config(trained_run.run_dir)["calibration"]
    assert c["images"] == 5000 and c["max_risk"] == 0.002 and c["temperature"] > 0
    assert c["val"]["ece_after"] < c["val"]["ece_before"]
    assert c["val"]["risk"] <= 0.002 and 0.5 < c["val"]["coverage"] < 1


@pytest.mark.slow
def test_torch_and_onnx_runtime_give_the_same_calibrated_answers(trained_run, tmp_path, mnist):
    path = tmp_path / "model.safetensors"
    shutil.copy(trained_run.run_dir / "best.safetensors", path)
    export(path, check=False)
    c = read_meta(path)["calibration"]
    assert OnnxModel(onnx_path_for(path)).meta["calibration"] == c
    torch_p = Predictor.load(path, backend="torch")
    onnx_p = Predictor.load(path, backend="onnx")
    images = list(mnist.test_images[:300].numpy())
    a, b = torch_p.predict(images), onnx_p.predict(images)
    pa, pb = (np.array([p.probabilities for p in r]) for r in (a, b))
    assert np.abs(pa - pb).max() < 1e-5
    seen = torch.from_numpy(np.stack([p.image for p in a]))[:, None]  # the pipeline's 28x28
    with torch.no_grad():
        raw = torch_p.model(seen)
    assert np.abs(pa - F.softmax(raw / c["temperature"], 1).numpy()).max() < 1e-5
    assert [int(np.argmax(p.probabilities)) for p in a] == raw.argmax(1).tolist()
    want = [p.confidence < c["uncertain_below"] or p.not_a_digit for p in b]
    assert [p.uncertain for p in b] == want


@pytest.mark.slow
def test_calibrate_stores_a_new_threshold_and_makes_the_exports_again(trained_run, tmp_path):
    path = tmp_path / "model.safetensors"
    shutil.copy(trained_run.run_dir / "best.safetensors", path)
    export(path, check=False)
    before = read_meta(path)["calibration"]
    r = run_cli("calibrate", str(path), "--max-risk", "0.01")
    assert r.returncode == 0, r.stderr
    assert "temperature" in r.stdout and f"exported again: {onnx_path_for(path)}" in r.stdout
    after = read_meta(path)["calibration"]
    assert after["max_risk"] == 0.01 and after["uncertain_below"] < before["uncertain_below"]
    assert after["temperature"] == pytest.approx(before["temperature"], rel=1e-6)
    # The export carries the new record and is this checkpoint's: the Predictor takes it.
    assert Predictor.load(path, backend="onnx").uncertain_below == after["uncertain_below"]

    r = run_cli("evaluate", str(path), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (
        report["not_sure"]["measured"]
        and report["not_sure"]["threshold"] == after["uncertain_below"]
    )
    assert report["ece"] < report["uncalibrated"]["ece"]
    assert (tmp_path / "report" / "risk_coverage.png").stat().st_size > 10_000


def test_calibrate_refuses_a_bad_risk_and_a_model_that_reads_numbers(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, untrained_with_statistics("fast"), META)
    r = run_cli("calibrate", str(path), "--max-risk", "2")
    assert r.returncode != 0 and "--max-risk 2.0: give a share" in r.stderr
    save_model(path, untrained_with_statistics("fast"), {**META, "reading": {"numbers": 1}})
    r = run_cli("calibrate", str(path))
    assert r.returncode != 0 and "reads numbers" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_runs_split_is_read_as_training_reads_it():
    """One reading of a run's validation split for calibration, learn and the model choice:
    a run from before split_seed split by its seed, as TrainConfig.from_dict says."""
    from digitrec.recipes import TrainConfig
    from digitrec.runs import split_of

    for settings in ({"seed": 3}, {}, {"val_size": 0, "split_seed": 2, "seed": 7}):
        cfg = TrainConfig.from_dict({"model": "fast", **settings})
        assert split_of(settings) == (cfg.val_size, cfg.split_seed)
