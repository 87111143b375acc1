"""Learning from corrections: the gate refuses a poisoned batch and promotes a genuine one,
the registry keeps every version with its log, activation and rollback, and the model
resolution follows the active version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from digitrec import registry
from digitrec.checkpoint import load_model
from digitrec.cli import main
from digitrec.data import split_indices, to_float
from digitrec.export import sha256
from digitrec.feedback import Correction, FeedbackStore
from digitrec.learn import HOLD_OUT, is_held_out
from digitrec.models import batched_logits
from digitrec.predictor import Predictor
from digitrec.runs import companions, resolve_model_path, shipped_model_path

pytestmark = pytest.mark.slow  # fine-tunes a model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIGITREC_RUNS_DIR", str(tmp_path / "no-runs"))
    return tmp_path / "home"


def misread(checkpoint, mnist, n: int) -> list[Correction]:
    """Training-split digits ``checkpoint`` reads wrong, corrected with their labels."""
    model, _ = load_model(checkpoint)
    train, _ = split_indices(len(mnist.train_images), 5000, 0)
    x, y = to_float(mnist.train_images[train[:30000]]), mnist.train_labels[train[:30000]]
    probs = torch.softmax(batched_logits(model, x), 1)
    wrong = (probs.argmax(1) != y).nonzero()[:n, 0]
    assert len(wrong) == n
    return [Correction(int(y[i]), x[i, 0].numpy(), int(probs[i].argmax()), probs[i].tolist(),
                       sha256(checkpoint), "cli") for i in wrong]  # fmt: skip


def shuffled(records: list[Correction], seed: int = 0) -> list[Correction]:
    """The same images, every label moved to another image's (none keeps its own)."""
    labels = [r.label for r in records]
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(labels))
        if all(labels[j] != r.label for r, j in zip(records, order, strict=True)):
            break
    return [Correction(labels[j], r.image, r.predicted, r.probabilities, r.model_sha256, r.source)
            for r, j in zip(records, order, strict=True)]  # fmt: skip


def learn_cli(capsys, *args: str) -> tuple[int, str]:
    """`digitrec learn ARGS`: its exit code, and what it printed (errors after output)."""
    code = main(["learn", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_fixed_share_of_corrections_is_held_out_by_hash():
    rng = np.random.default_rng(0)
    records = [Correction(1, rng.random((28, 28), dtype=np.float32), 7, [0.1] * 10, "x", "web")
               for _ in range(500)]  # fmt: skip
    held = [is_held_out(r) for r in records]
    assert abs(np.mean(held) - 1 / HOLD_OUT) < 0.05
    assert held == [is_held_out(r) for r in records]  # the same again: fixed by content


def test_the_gate_refuses_a_poisoned_batch_and_promotes_a_genuine_one(
    home, trained_run, mnist, capsys
):
    checkpoint = trained_run.run_dir / "best.safetensors"
    genuine = misread(checkpoint, mnist, 60)
    poisoned = FeedbackStore(str(home / "poisoned.sqlite3"))
    for r in shuffled(genuine):
        poisoned.add(r)
    base = ["--model-path", str(checkpoint), "--device", "cpu", "--epochs", "1"]
    code, out = learn_cli(capsys, *base, "--feedback-url", poisoned.url)
    assert code == 1 and "refused: " in out, out
    assert re.search(r"validation accuracy fell|held-out corrections did not improve", out), out
    assert registry.active() is None and [v.number for v in registry.versions()] == [0]

    store = FeedbackStore(str(home / "genuine.sqlite3"))
    for r in genuine:
        store.add(r)
    code, out = learn_cli(capsys, *base, "--feedback-url", store.url, "--dry-run")
    assert code == 0 and "passed the gate; --dry-run: not promoted" in out, out
    assert registry.active() is None
    code, out = learn_cli(capsys, *base, "--feedback-url", store.url)
    assert code == 0 and "promoted: version 1 is active now" in out, out
    for line in ("validation (5,000)", "held-out corrections", "canary: outline"):
        assert line in out
    v1 = registry.active()
    assert v1.number == 1 and v1.record["parent"] is None and v1.record["metrics"]["corrections"]
    run = v1.record["metrics"]["parent"]
    assert run == str(checkpoint)
    # the candidate is a run of its own, with its curves, outside the runs directory
    candidate = Path(v1.record["source"]).parent
    assert {"config.json", "metrics.csv", "curves.png", "best.safetensors"} <= {
        p.name for p in candidate.iterdir()
    }
    config = json.loads((candidate / "config.json").read_text())
    assert config["learn"]["refused"] == [] and config["settings"]["model"] == "fast"
    # what predict, serve and gui use now
    path, source = resolve_model_path()
    assert (path, source) == (v1.path, "registry version 1")
    assert Predictor.load().meta["recipe"] == "learn"


def test_activate_rollback_and_list(home, capsys):
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert resolve_model_path()[1] == "shipped default"
    shipped = shipped_model_path()
    first = registry.promote(shipped, "a copy", {"validation": 0.99}, 0, companions(shipped))
    # it reads numbers with the reading model of the model it came from, copied beside it
    reader = Predictor.load(first.path).reading_model()
    assert (reader.path.name, reader.backend) == ("model.reader.onnx", "onnx")
    second = registry.promote(shipped_model_path(), "again", {}, first.number)
    assert (first.number, second.number, registry.active().number) == (1, 2, 2)
    assert registry.rollback().number == 1
    assert registry.rollback().number == 0  # before the first: the shipped model
    assert resolve_model_path() == (shipped_model_path(), "registry version 0")
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert main(["model", "activate", "2"]) == 0
    assert "version 2 is active now" in capsys.readouterr().out
    assert main(["model", "activate", "7"]) == 2
    assert "no model version 7" in capsys.readouterr().err
    assert main(["model", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^\*\s+2\s", listing, re.M) and re.search(r"^\s+0\s.*shipped", listing, re.M)
    actions = [(e["action"], e["version"], e["previous"]) for e in registry.log()]
    assert actions == [("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2),
                       ("rollback", 0, 1), ("activate", 2, 0)]  # fmt: skip
    assert all(e["who"] and e["time"] for e in registry.log())
    assert main(["model", "rollback"]) == 0
    assert "version 0 is active now" in capsys.readouterr().out


def test_learning_needs_corrections_and_says_how_to_make_them(home, capsys):
    store = FeedbackStore(str(home / "empty.sqlite3"))
    code, out = learn_cli(capsys, "--feedback-url", store.url)
    assert code == 2
    assert "correct more answers on the page, in the window or with `digitrec correct`" in out


def test_only_the_newest_candidates_are_kept(tmp_path):
    """learn/ keeps the five newest candidate runs; a promoted one lives on in the registry."""
    from digitrec.learn import KEEP_CANDIDATES, prune_candidates

    names = [f"20261205-1{k}0000-learn" for k in range(7)] + ["20261205-160000-learn-2"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # not a run: never touched
    gone = prune_candidates(tmp_path)
    assert [d.name for d in gone] == names[:3] and KEEP_CANDIDATES == 5
    assert sorted(d.name for d in tmp_path.iterdir()) == sorted([*names[3:], "notes"])
    assert prune_candidates(tmp_path / "missing") == []
