"""The model inside the package: how it was made is recorded, and it still scores that."""

import json

import pytest
import torch

from digitrec.checkpoint import load_model, read_meta
from digitrec.data import to_float
from digitrec.predictor import Predictor
from digitrec.runs import shipped_model_path


def test_shipped_model_records_its_origin():
    meta = read_meta(shipped_model_path())
    record = json.loads(shipped_model_path().with_name("default.json").read_text())
    # the commands that made it, runnable one after another in an empty directory
    assert meta["command"] == record["command"] == " && ".join(record["steps"])
    base, tune, average = record["steps"]
    assert base.startswith("digitrec train --recipe best") and base.endswith("--out base")
    assert tune.startswith("digitrec train ") and "--init base" in tune
    assert average == "digitrec ensemble base tuned --average"
    assert meta["test_accuracy"] == record["test"]["accuracy"]
    assert meta["model"] == record["config"]["settings"]["model"] == "best"
    assert [m["share"] for m in meta["members"]] == [0.5, 0.5]
    assert record["validation"]["val_acc"] == meta["metrics"]["val_acc"]
    assert record["tuned"]["settings"]["outline"] > 0 and record["base"]["settings"]["seed"] == 0


@pytest.mark.slow
def test_shipped_model_reaches_its_recorded_test_accuracy(mnist):
    model, meta = load_model(shipped_model_path())
    with torch.inference_mode():
        pred = model(to_float(mnist.test_images)).argmax(1)
    acc = (pred == mnist.test_labels).float().mean().item()
    # The same weights on the same images: equal up to float rounding on another CPU.
    assert acc == pytest.approx(meta["test_accuracy"], abs=2e-4)
    assert acc >= 0.99


def test_predictor_falls_back_to_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITREC_MODEL", raising=False)
    p = Predictor.load(runs_dir=str(tmp_path))
    assert p.source == "shipped default"
    assert p.name == read_meta(shipped_model_path())["model"]
