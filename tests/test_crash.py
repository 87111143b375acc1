"""Training killed with SIGKILL at each of its save points, and two trainings of one run
at once: every kill leaves a run that `--resume` finishes, equal to one never killed."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from digitrec.files import write_json
from digitrec.recipes import make_config
from digitrec.runs import list_runs, locked
from digitrec.train import train

pytestmark = pytest.mark.slow  # trains, or runs the CLI, a server or a browser

# A small real run (dropout and augmentation: every RNG state matters), as flags and as
# the same config for the uninterrupted reference.
SETTINGS = {"epochs": 2, "limit": 3000, "batch_size": 128, "augment": True, "device": "cpu",
            "schedule": "onecycle", "lr": 3e-3}  # fmt: skip
FLAGS = ["--model", "mlp", "--epochs", "2", "--limit", "3000", "--batch-size", "128",
         "--augment", "--device", "cpu", "--schedule", "onecycle", "--lr", "3e-3",
         "--no-progress"]  # fmt: skip

# Runs `digitrec train` and SIGKILLs it at the n-th atomic save of a file, just before or
# just after the temporary file is renamed over it: the kill -9 of an unlucky moment.
KILL_AT = textwrap.dedent("""
    import os, signal, sys
    name, when, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real, seen = os.replace, [0]
    def replace(src, dst, *args, **kwargs):
        hit = os.path.basename(dst) == name and (seen.__setitem__(0, seen[0] + 1) or seen[0] == nth)
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from digitrec.cli import main
    sys.exit(main(sys.argv[4:]))
""")


def killed_at(name: str, when: str, nth: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILL_AT, name, when, str(nth), "train", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def metrics(run):
    with (run / "metrics.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def whole(mnist, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole")
    train(make_config(None, "mlp", SETTINGS), mnist, run, progress=False, log=lambda s: None)
    return run


# The saves of a 2-epoch run, in order: config.json, state (before epoch 1), then per
# epoch best, last, metrics.csv, curves.png, state; config.json last.
@pytest.mark.parametrize(
    "name, when, nth",
    [
        ("state.safetensors", "before", 1),  # before the first state exists
        ("best.safetensors", "after", 1),  # epoch 1's files, but not its state (was stuck)
        ("metrics.csv", "after", 1),
        ("curves.png", "before", 1),  # a half-written file left behind
        ("state.safetensors", "before", 2),  # epoch 1's state half-written
        ("last.safetensors", "after", 2),
        ("config.json", "before", 2),  # the final bookkeeping (was `running` forever)
    ],
)
def test_a_run_killed_at_any_save_resumes_to_the_uninterrupted_result(
    whole, tmp_path, name, when, nth
):
    out = tmp_path / "run"
    r = killed_at(name, when, nth, *FLAGS, "--out", str(out))
    assert r.returncode == -9, r.stderr
    [listed] = list_runs(tmp_path)
    assert listed.status.startswith("stopped"), listed  # not `running` forever
    resumed = run_cli("train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    for checkpoint in ("last.safetensors", "best.safetensors"):
        a, b = load_file(whole / checkpoint), load_file(out / checkpoint)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), checkpoint
    assert metrics(whole) == metrics(out)
    assert list_runs(tmp_path)[0].status == "complete"
    assert not [f.name for f in out.iterdir() if f.name.endswith(".tmp")]


def test_stale_temporaries_of_every_writer_are_removed_on_resume(tmp_path):
    out = tmp_path / "run"
    r = killed_at("last.safetensors", "before", 1, *FLAGS, "--out", str(out))
    assert r.returncode == -9
    left = [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
    assert left and left[0].startswith(".last.safetensors.")  # ours, half-written
    (out / ".tmpAb12Cd").write_bytes(b"safetensors' own temporary")  # its Rust writer's
    resumed = run_cli("train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0 and "removed 2 half-written file(s)" in resumed.stdout
    assert sorted(f.name for f in out.iterdir() if f.name.startswith(".")) == [".lock"]


def test_a_run_directory_in_use_is_refused_to_a_second_process(tmp_path):
    """Two `train` of one --out, or two `--resume` of one run, both trained and exited 0,
    leaving one's config and metrics beside the other's checkpoint."""
    out = tmp_path / "run"
    with locked(out):  # as a training process holds it
        r = run_cli("train", *FLAGS, "--out", str(out))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"error: {out} is in use by another digitrec process (pid " in r.stderr
        assert not (out / "config.json").exists()  # the refused one wrote nothing
        config = {"settings": make_config(None, "mlp", SETTINGS).to_dict(), "status": "running"}
        write_json(out / "config.json", config)  # as the holder wrote it
        r = run_cli("train", "--resume", str(out))
        assert r.returncode == 2 and "in use by another digitrec process" in r.stderr
        [listed] = list_runs(tmp_path)
        assert listed.status == "running"  # truly: its lock is held


def test_two_trainings_started_together_into_one_directory(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "digitrec", "train", *FLAGS, "--out", str(out)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    [refused] = [err for code, err in results if code == 2]
    assert "is in use by another digitrec process" in refused or "already holds a run" in refused
    [run] = list_runs(tmp_path)
    assert run.status == "complete" and run.epochs == 2
