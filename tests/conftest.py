"""Shared fixtures. The real MNIST is used throughout: DIGITREC_DATA_DIR points at it
(CI sets it); without it the normal resolution applies, downloading where possible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitrec.data import Dataset, load_dataset
from digitrec.recipes import make_config
from digitrec.train import TrainResult, train


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def trained_run(mnist: Dataset, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One real epoch of the fast recipe on all of MNIST: the end-to-end check, and a
    checkpoint for the evaluation, prediction and CLI tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "fast-1epoch"
    run_dir.mkdir()
    cfg = make_config("fast", None, {"epochs": 1, "seed": 0, "device": "cpu"})
    return train(cfg, mnist, run_dir, progress=False, log=lambda s: None)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    **kw,
):
    """Run `python -m digitrec ...` as a user would, returning the CompletedProcess.

    A command expected to refuse at once (a `serve` with bad settings) gets a short
    ``timeout``: should it start serving instead, the test fails in a minute, not ten."""
    return subprocess.run(
        [sys.executable, "-m", "digitrec", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        **kw,
    )
