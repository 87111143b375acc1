import csv
import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from digitrec.checkpoint import load_model, load_tree
from digitrec.data import split_indices, to_float
from digitrec.errors import DigitrecError, Interrupted
from digitrec.models import batched_logits, build_model
from digitrec.recipes import RECIPES, make_config
from digitrec.runs import list_runs
from digitrec.train import WeightAverage, train, use_bfloat16


class StopAfter:
    """Stands in for the Ctrl-C flag: reports a stop request at the n-th check."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n <= 0


def quiet(msg: str) -> None:
    pass


# A small real run: dropout and augmentation make every RNG state matter.
SMALL = {
    "epochs": 2,
    "limit": 3000,
    "batch_size": 128,
    "augment": True,
    "device": "cpu",
    "schedule": "onecycle",
    "lr": 3e-3,
}


def metrics(run):
    with (run / "metrics.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, stop_at, extra",
    [
        ("mlp", 7, {}),
        ("mlp", 24, {}),
        ("fast", 30, {}),
        ("fast", 30, {"ema": 0.99}),
        ("fast", 30, {"val_size": 0}),
    ],
)
def test_interrupted_and_resumed_equals_uninterrupted(mnist, tmp_path, model, stop_at, extra):
    """24 batches of 128 is exactly one epoch of 3000 images: the epoch-boundary case."""
    cfg = make_config(None, model, {**SMALL, **extra})
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir()
    parts.mkdir()
    train(cfg, mnist, whole, progress=False, log=quiet)
    with pytest.raises(Interrupted, match="digitrec train --resume"):
        train(cfg, mnist, parts, stop=StopAfter(stop_at), progress=False, log=quiet)
    assert (parts / "state.safetensors").is_file()
    train(cfg, mnist, parts, resume=True, progress=False, log=quiet)
    a, b = load_file(whole / "last.safetensors"), load_file(parts / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(whole) == metrics(parts)


def test_weight_average_follows_its_formula():
    """Batch norm's statistics are averaged like the weights; its counter is copied."""
    live = build_model("fast")
    avg = WeightAverage(live, decay=0.9)
    start = {k: v.clone() for k, v in live.state_dict().items()}
    expected = {k: v.clone() for k, v in start.items() if v.is_floating_point()}
    torch.manual_seed(0)
    for step in range(30):
        with torch.no_grad():
            for v in live.state_dict().values():
                v.add_(torch.randn_like(v)) if v.is_floating_point() else v.add_(1)
        avg.update(step)
        d = min(0.9, (1 + step) / (10 + step))
        for k in expected:
            expected[k] = d * expected[k] + (1 - d) * live.state_dict()[k]
    for k, v in avg.model.state_dict().items():
        if k in expected:
            assert torch.allclose(v, expected[k], atol=1e-5), k
            assert not torch.allclose(v, live.state_dict()[k]), k
        else:
            assert torch.equal(v, live.state_dict()[k]), k  # num_batches_tracked


@pytest.mark.slow
def test_with_ema_the_average_is_validated_and_saved(mnist, tmp_path):
    cfg = make_config(None, "fast", {**SMALL, "epochs": 1, "ema": 0.95})
    result = train(cfg, mnist, tmp_path, progress=False, log=quiet)
    saved = load_file(tmp_path / "last.safetensors")
    state = load_tree(tmp_path / "state.safetensors")
    assert all(torch.equal(saved[k], state["average"][k]) for k in saved)
    assert any(not torch.equal(saved[k], state["model"][k]) for k in saved)
    model, _ = load_model(tmp_path / "last.safetensors")
    _, val_idx = split_indices(len(mnist.train_images), cfg.val_size, cfg.split_seed)
    x, y = to_float(mnist.train_images[val_idx]), mnist.train_labels[val_idx]
    acc = (batched_logits(model, x).argmax(1) == y).float().mean().item()
    assert result.history[0]["val_acc"] == pytest.approx(acc, abs=1e-6)
    with pytest.raises(DigitrecError, match=r"--ema 1\.0"):
        make_config(None, None, {"ema": 1.0})
    with pytest.raises(DigitrecError, match=r"--pen 1\.5: a share of images"):
        make_config(None, None, {"pen": 1.5})
    with pytest.raises(DigitrecError, match=r"--elastic -0\.1"):
        make_config(None, None, {"elastic": -0.1})


@pytest.mark.slow
def test_without_a_validation_split_every_image_trains_and_the_last_epoch_is_kept(mnist, tmp_path):
    """--val-size 0, the final fit once a recipe is chosen: nothing is held out or scored,
    and the run's checkpoint is its last epoch."""
    cfg = make_config(None, "fast", {"val_size": 0, "epochs": 2, "batch_size": 1024})
    calls, run = [], tmp_path / "all"
    run.mkdir()
    result = train(
        cfg, mnist, run, progress=False, log=quiet, callback=lambda m, e: calls.append(e)
    )
    assert len(calls) == 2 * 59  # 60,000 images in batches of 1,024 (55,000 would be 54)
    assert result.best_val_acc is None
    assert json.loads((run / "config.json").read_text())["best_val_acc"] is None
    assert all(row["val_acc"] == row["val_loss"] == "" for row in metrics(run))
    best, last = load_file(run / "best.safetensors"), load_file(run / "last.safetensors")
    assert all(torch.equal(best[k], last[k]) for k in last)
    validated = tmp_path / "validated"
    validated.mkdir()
    train(
        make_config(None, "mlp", {**SMALL, "epochs": 1}),
        mnist,
        validated,
        progress=False,
        log=quiet,
    )
    assert [(r.path, r.val_acc) for r in list_runs(tmp_path)][-1] == (run, None)
    for refused in ({"early_stop": 2}, {"schedule": "plateau"}):
        with pytest.raises(DigitrecError, match="--val-size 0 holds no images out"):
            make_config(None, None, {"val_size": 0, **refused})


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so(mnist, tmp_path):
    cfg = make_config(None, "mlp", {**SMALL, "epochs": 1})
    train(cfg, mnist, tmp_path, progress=False, log=quiet)
    with pytest.raises(DigitrecError, match="already finished"):
        train(cfg, mnist, tmp_path, resume=True, progress=False, log=quiet)
    # Without its state (deleted to save space), it is not taken for one killed at start.
    (tmp_path / "state.safetensors").unlink()
    with pytest.raises(DigitrecError, match="already finished"):
        train(cfg, mnist, tmp_path, resume=True, progress=False, log=quiet)


@pytest.mark.slow
def test_early_stopping(mnist, tmp_path):
    cfg = make_config(
        None,
        "mlp",
        {**SMALL, "epochs": 6, "lr": 1e-12, "early_stop": 2, "schedule": "none", "augment": False},
    )
    result = train(cfg, mnist, tmp_path, progress=False, log=quiet)
    assert len(result.history) == 3  # best at epoch 1, then two epochs without improvement


@pytest.mark.slow
def test_end_to_end_fast_recipe_reaches_98_5_percent(trained_run):
    """One epoch of the fast recipe on the real 55,000 training images."""
    run = trained_run.run_dir
    assert trained_run.best_val_acc >= 0.985
    for name in (
        "config.json",
        "metrics.csv",
        "best.safetensors",
        "last.safetensors",
        "state.safetensors",
        "curves.png",
    ):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["status"] == "complete" and cfg["settings"]["seed"] == 0
    assert cfg["versions"]["torch"] == torch.__version__
    assert cfg["data"]["files"]["test_labels"]["md5"] == "ec29112dd5afa0611ce80d1b7f02629c"
    [summary] = list_runs(run.parent)
    assert summary.val_acc == pytest.approx(trained_run.best_val_acc, abs=1e-4)


def test_recipes_resolve_and_flags_override():
    assert make_config(None, None, {}).recipe == "fast"
    cfg = make_config(None, "cnn", {"epochs": 2})
    assert (cfg.model, cfg.recipe, cfg.epochs) == ("cnn", "cnn", 2)
    assert make_config("classic", None, {}).optimizer == "adadelta"
    assert make_config("best", "fast", {}).model == "fast"
    with pytest.raises(DigitrecError, match="Unknown recipe"):
        make_config("turbo", None, {})
    with pytest.raises(DigitrecError, match="at least 1"):
        make_config(None, None, {"epochs": 0})
    assert set(RECIPES) >= {"mlp", "cnn", "cnn4", "fast", "mid", "best"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_trains_briefly_and_is_recorded(mnist, tmp_path, name):
    """Each recipe's settings go through the loop as given (optimizer, schedule, EMA,
    augmentation), on 4,000 images, and the run records which recipe it was."""
    cfg = make_config(name, None, {"epochs": 1, "limit": 4000, "device": "cpu"})
    result = train(cfg, mnist, tmp_path, progress=False, log=quiet)
    settings = json.loads((tmp_path / "config.json").read_text())["settings"]
    assert (settings["recipe"], settings["model"]) == (name, RECIPES[name].model)
    assert settings["augment"] == RECIPES[name].augment and settings["ema"] == RECIPES[name].ema
    assert (tmp_path / "best.safetensors").is_file()
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert result.best_val_acc > 0.5  # 0.76 to 0.95 here; chance is 0.1


@pytest.mark.slow
def test_init_starts_from_a_checkpoint_and_records_it(mnist, tmp_path):
    first = make_config(None, "mlp", {**SMALL, "epochs": 1})
    before = train(first, mnist, tmp_path / "a", progress=False, log=quiet).best_val_acc
    # One step at a learning rate of ~0: the fine-tuned run's weights are its start's.
    tiny = {**SMALL, "epochs": 1, "limit": 128, "lr": 1e-12, "schedule": "none"}
    cfg = make_config(None, "mlp", {**tiny, "init": str(tmp_path / "a")})
    result = train(cfg, mnist, tmp_path / "b", progress=False, log=quiet)
    start = load_file(tmp_path / "a" / "best.safetensors")
    tuned = load_file(tmp_path / "b" / "last.safetensors")
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in start)
    assert before > 0.5 and result.best_val_acc == pytest.approx(before, abs=2e-4)  # random: 0.1
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["init"]["path"] == str(tmp_path / "a" / "best.safetensors")
    assert config["init"]["run"] == "a" and config["settings"]["init"] == str(tmp_path / "a")


def test_init_refuses_another_architecture_or_a_missing_checkpoint(mnist, tmp_path):
    cfg = make_config(None, "fast", {**SMALL, "init": "default"})  # the shipped model is `best`
    with pytest.raises(DigitrecError, match=r"holds a 'best' model.*--model best"):
        train(cfg, mnist, tmp_path / "x", progress=False, log=quiet)
    cfg = make_config(None, "fast", {**SMALL, "init": str(tmp_path / "nothing.safetensors")})
    with pytest.raises(DigitrecError, match="No checkpoint"):
        train(cfg, mnist, tmp_path / "y", progress=False, log=quiet)


@pytest.mark.slow
def test_sigint_handler_only_in_the_main_thread(mnist, tmp_path):
    """Training from a worker thread (as a GUI would) must not touch signal handlers."""
    cfg = make_config(None, "mlp", {**SMALL, "epochs": 1, "limit": 500})
    errors = []

    def work():
        try:
            train(cfg, mnist, tmp_path, progress=False, log=quiet)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []


@pytest.mark.slow
def test_bfloat16_autocast_is_chosen_recorded_and_trains(mnist, tmp_path):
    cpu = torch.device("cpu")
    assert use_bfloat16("bf16", cpu) and not use_bfloat16("fp32", cpu)
    native = torch.cpu.get_capabilities().get("avx512_bf16", False)
    assert use_bfloat16("auto", cpu) == native
    with pytest.raises(DigitrecError, match="Unknown precision 'fp16'"):
        make_config(None, None, {"precision": "fp16"})
    results = {}
    for precision in ("fp32", "bf16"):
        cfg = make_config(None, "fast", {**SMALL, "epochs": 1, "precision": precision})
        results[precision] = train(cfg, mnist, tmp_path / precision, progress=False, log=quiet)
        config = json.loads((tmp_path / precision / "config.json").read_text())
        assert config["autocast"] == ("bfloat16" if precision == "bf16" else None)
    # Same seed, same batches: only the arithmetic differs, and both learn.
    loss = {p: r.history[0]["train_loss"] for p, r in results.items()}
    assert loss["fp32"] != loss["bf16"]
    accs = [r.best_val_acc for r in results.values()]
    assert min(accs) > 0.8 and max(accs) - min(accs) < 0.03  # random would be 0.1
