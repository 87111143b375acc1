"""Ensembles: the mean of their members' probabilities, written as a run that every
command takes like a single model."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import run_cli
from digitrec.checkpoint import ENSEMBLE, load_model
from digitrec.ensemble import make_ensemble
from digitrec.errors import CheckpointError
from digitrec.export import OnnxModel, export
from digitrec.models import Ensemble, build_model
from digitrec.predictor import Predictor
from digitrec.recipes import TrainConfig, make_config
from digitrec.runs import list_runs, shipped_model_path
from digitrec.train import train


def small_run(mnist, root, seed: int, model: str = "mlp", **extra):
    cfg = make_config(None, model, {"epochs": 1, "limit": 3000, "seed": seed, "device": "cpu",
                                    **extra})  # fmt: skip
    run = root / f"{model}-s{seed}-{extra.get('split_seed', 0)}"
    run.mkdir(parents=True)
    return train(cfg, mnist, run, progress=False, log=lambda s: None).run_dir


@pytest.fixture(scope="module")
def members(mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, [small_run(mnist, root, 0), small_run(mnist, root, 1, model="fast")]


def test_output_is_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    parts = [build_model(n).eval() for n in ("mlp", "fast", "cnn")]
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in parts]).mean(0)
        out = Ensemble(parts)(x)
    assert torch.allclose(torch.softmax(out, 1), mean, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)  # already normalized


def test_split_seed_is_shared_by_runs_of_any_seed():
    assert make_config(None, None, {"seed": 3}).split_seed == 0
    # a run recorded before split_seed existed was split by its seed
    assert TrainConfig.from_dict({"seed": 3}).split_seed == 3
    assert TrainConfig.from_dict({"seed": 3, "split_seed": 0}).split_seed == 0


@pytest.mark.slow
def test_ensemble_run_is_scored_on_the_shared_split_and_used_everywhere(members, mnist, tmp_path):
    root, runs = members
    out = root / "ens"
    r = make_ensemble(runs, out, root=root)
    assert len(r.member_val_accs) == 2 and all(0.8 < a < 1 for a in r.member_val_accs)
    # On the same 5,000 held-out images, averaging two different models helps here
    # (84.5% and 88.0% alone, 89.3% together: seeded, so the same every run).
    assert r.val_acc is not None and r.val_acc > max(r.member_val_accs)

    model, meta = load_model(out / "best.safetensors")
    assert isinstance(model, Ensemble) and meta["model"] == ENSEMBLE
    assert [m["model"] for m in meta["members"]] == ["mlp", "fast"]
    assert [m["seed"] for m in meta["members"]] == [0, 1]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "complete" and cfg["best_val_acc"] == pytest.approx(r.val_acc)

    # its probabilities are the mean of the members' on real test digits
    x = mnist.test_images[:64].float()[:, None] / 255
    parts = [load_model(run / "best.safetensors")[0] for run in runs]
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in parts]).mean(0)
        assert torch.allclose(torch.softmax(model(x), 1), mean, atol=1e-5)

    # listed with the runs, and the Predictor takes it like any model, calibrated on the
    # split the members share as a run is at its end
    assert out in [s.path for s in list_runs(root)]
    p = Predictor.load(out, backend="torch")
    assert p.name == ENSEMBLE and p.temperature == meta["calibration"]["temperature"]
    probs = p.probabilities(x)
    assert torch.allclose(probs, torch.softmax(mean.log() / p.temperature, 1), atol=1e-4)

    # and so does ONNX: export with the parity check on the test set, then the backend
    onnx = tmp_path / "ens.onnx"
    _, f32 = export(out / "best.safetensors", onnx)
    assert f32.agreement >= 0.9999 and f32.max_diff <= 1e-4
    assert OnnxModel(onnx).meta["model"] == ENSEMBLE


@pytest.mark.slow
def test_members_on_different_splits_get_no_validation_score(members, mnist, tmp_path):
    _, runs = members
    other = small_run(mnist, tmp_path, 2, split_seed=7)
    r = make_ensemble([runs[0], other], tmp_path / "mixed")
    assert r.val_acc is None and "different splits" in r.note
    assert load_model(tmp_path / "mixed" / "best.safetensors")[1]["metrics"] == {}


@pytest.mark.slow
def test_members_trained_on_every_image_get_no_validation_score(mnist, tmp_path):
    runs = [small_run(mnist, tmp_path, seed, val_size=0) for seed in (0, 1)]
    r = make_ensemble(runs, tmp_path / "all")
    assert r.val_acc is None and r.member_val_accs == [None, None] and "--val-size 0" in r.note
    model, meta = load_model(tmp_path / "all" / "best.safetensors")
    assert meta["metrics"] == {} and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_bad_members_are_refused(members, tmp_path):
    _, runs = members
    with pytest.raises(CheckpointError, match="at least two"):
        make_ensemble(runs[:1], tmp_path / "one")
    make_ensemble(runs, tmp_path / "ens")
    with pytest.raises(CheckpointError, match="already an ensemble"):
        make_ensemble([tmp_path / "ens", runs[0]], tmp_path / "nested")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        make_ensemble([runs[0], tmp_path / "missing.safetensors"], tmp_path / "missing")


@pytest.mark.slow
def test_cli_ensemble_then_evaluate(members, tmp_path):
    root, runs = members
    env = {"DIGITREC_RUNS_DIR": str(root)}
    r = run_cli("ensemble", runs[0].name, runs[1].name, "--out", str(tmp_path / "e"), env=env)
    assert r.returncode == 0, r.stderr
    val = re.search(r"ensemble of 2 in \S+: validation accuracy ([\d.]+)%", r.stdout)
    assert val and 80 < float(val.group(1)) < 100, r.stdout
    r = run_cli("evaluate", str(tmp_path / "e"), env=env)
    assert r.returncode == 0, r.stderr
    acc = float(re.search(r"ensemble on mnist test: accuracy ([\d.]+)", r.stdout).group(1))
    assert 0.8 < acc < 1  # 3,000 training images, one epoch each
    r = run_cli("ensemble", runs[0].name, "nope", env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: No run 'nope'")
    assert not [d for d in root.iterdir() if d.name.endswith("-ensemble")]  # none left behind


@pytest.mark.slow
def test_weight_average_of_a_model_and_its_fine_tuned_version(members, mnist, tmp_path):
    root, runs = members
    tuned = small_run(mnist, root, 5, init=str(runs[0]), augment=True, outline=0.3, lr=3e-4)
    out = tmp_path / "avg"
    r = make_ensemble([runs[0], tuned], out, average=True, weights=[3, 1])
    model, meta = load_model(out / "best.safetensors")
    assert meta["model"] == "mlp" and meta["recipe"] == "average"  # one plain mlp, not two
    assert [m["share"] for m in meta["members"]] == [0.75, 0.25]
    a, b = (load_model(run / "best.safetensors")[0].state_dict() for run in (runs[0], tuned))
    for k, v in model.state_dict().items():
        assert torch.allclose(v, 0.75 * a[k] + 0.25 * b[k], atol=1e-6), k
    # scored on the shared validation split, like an ensemble
    x, y = mnist.test_images[:500].float()[:, None] / 255, mnist.test_labels[:500]
    assert r.val_acc is not None and 0.8 < r.val_acc < 1
    assert (
        Predictor.load(out, backend="torch").probabilities(x).argmax(1) == y
    ).float().mean() > 0.8
    # all of one member is that member
    make_ensemble([runs[0], tuned], tmp_path / "first", average=True, weights=[1, 0])
    first = load_model(tmp_path / "first" / "best.safetensors")[0].state_dict()
    assert all(torch.equal(first[k], a[k]) for k in a)


@pytest.mark.slow
def test_weight_average_refuses_what_it_cannot_average(members, tmp_path):
    _, runs = members
    with pytest.raises(CheckpointError, match="one architecture, got fast, mlp"):
        make_ensemble(runs, tmp_path / "a", average=True)
    with pytest.raises(CheckpointError, match="one non-negative share per member"):
        make_ensemble([runs[0], runs[0]], tmp_path / "b", average=True, weights=[1, 1, 1])
    with pytest.raises(CheckpointError, match="one non-negative share per member"):
        make_ensemble([runs[0], runs[0]], tmp_path / "b", average=True, weights=[1, float("nan")])
    with pytest.raises(CheckpointError, match="--weights goes with --average"):
        make_ensemble(runs, tmp_path / "c", weights=[1, 2])
    assert not any((tmp_path / d).exists() for d in "abc")


@pytest.mark.slow
def test_cli_weight_average_with_the_shipped_model(mnist, tmp_path):
    """`default` names the shipped model; its run's settings come from default.json, so the
    average of it with itself is scored on the validation split and equals it."""
    r = run_cli("ensemble", "default", "default", "--average", "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    val = re.search(r"weight average of 2 in \S+: validation accuracy ([\d.]+)%", r.stdout)
    shipped, meta = load_model(shipped_model_path())
    assert val and float(val.group(1)) == pytest.approx(100 * meta["metrics"]["val_acc"], abs=0.01)
    mine = load_model(tmp_path / "d" / "best.safetensors")[0].state_dict()
    assert all(torch.allclose(mine[k], v) for k, v in shipped.state_dict().items())
