"""Shared fixtures. The real MNIST is used throughout: DIGITREC_DATA_DIR points at it
(CI sets it); without it the normal resolution applies, downloading where possible."""

from __future__ import annotations

import glob
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec.data import Dataset, load_dataset
from digitrec.models import build_model
from digitrec.predictor import Predictor
from digitrec.recipes import make_config
from digitrec.train import TrainResult, train


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digitrec's home (the corrections store, the model registry) in a temp dir: the
    tests never read or write the user's, and the processes they start inherit it."""
    home = tmp_path_factory.mktemp("digitrec-home")
    os.environ["DIGITREC_HOME"] = str(home)
    os.environ.pop("DIGITREC_FEEDBACK_URL", None)
    return home


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


def missing_system_package(what: str) -> None:
    """Skip a test whose Debian package is not installed; under CI, where
    tools/install-system-deps.sh has run, fail instead: a skip there would hide a
    missing install step."""
    message = f"{what} is not installed: run tools/install-system-deps.sh (as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nobody listens on (for a server the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    """Until the server at ``url`` says it is ready; a server that does not start within a
    minute fails the test with what it printed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("server did not start: " + (proc.communicate()[0] or ""))


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    """An array or image as the bytes of an image file."""
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt)
    return buf.getvalue()


def untrained_with_statistics(name: str, seed: int = 0) -> torch.nn.Module:
    """A zoo model in eval mode whose batch norms hold non-trivial statistics, as after
    training (so folding them, exporting them, is really tested)."""
    torch.manual_seed(seed)
    model = build_model(name).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def assert_drawn(path: Path) -> None:
    """A PNG that exists, opens, and shows something (not one flat colour)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert min(a.shape) >= 100 and a.std() > 5, (
        f"{path}: blank or tiny ({a.shape}, std {a.std():.1f})"
    )


@pytest.fixture(scope="session")
def glyphs(mnist) -> dict[int, np.ndarray]:
    """One test digit of each class, cropped to its ink, that the model reads alone."""
    predictor, out = Predictor.load(), {}
    for img, label in zip(mnist.test_images.numpy(), mnist.test_labels.tolist(), strict=True):
        if label not in out and predictor.predict_one(img).digit == label:
            rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
            out[label] = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if len(out) == 10:
            return out
    raise AssertionError("no test digit of some class is read right")


def compose(glyphs, lines: list[str], scale: int = 3, gap: int = 6):
    """Dark digits on white, each line's characters ``gap`` MNIST px apart, lines 12 px
    apart; '.' is a dot on the baseline, ',' one with a tail below it. Returns the image
    and each digit's box."""
    rows = []
    for text in lines:
        canvas, boxes, x = np.zeros((26, 8 + 30 * len(text)), np.uint8), [], 4
        for ch in text:
            if ch in ".,":
                canvas[19:22, x : x + 3] = 255
                if ch == ",":
                    canvas[22:25, x + 1 : x + 3] = 255
                x += 3 + gap
                continue
            g = glyphs[int(ch)]
            y = 2 + (20 - g.shape[0]) // 2
            canvas[y : y + g.shape[0], x : x + g.shape[1]] = g
            boxes.append((x, y, x + g.shape[1], y + g.shape[0]))
            x += g.shape[1] + gap
        rows.append((canvas[:, : x + 4 - gap], boxes))
    width = max(c.shape[1] for c, _ in rows)
    page = np.zeros((sum(c.shape[0] + 12 for c, _ in rows), width), np.uint8)
    all_boxes, y = [], 0
    for c, boxes in rows:
        page[y : y + c.shape[0], : c.shape[1]] = c
        all_boxes += [(x0, y0 + y, x1, y1 + y) for x0, y0, x1, y1 in boxes]
        y += c.shape[0] + 12
    img = Image.fromarray(255 - page).resize((width * scale, page.shape[0] * scale))
    return img, [tuple(v * scale for v in b) for b in all_boxes]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of the test's own (initdb and pg_ctl in a temp dir, as an
    unprivileged user when the tests run as root: PostgreSQL refuses root), its URL."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (debian[-1] if debian else None)
    if initdb is None:
        missing_system_package("PostgreSQL (Debian package postgresql)")
    bin_dir = Path(initdb).resolve().parent
    # Not under pytest's temp dir: its parents are private to root, the server's user
    # could not reach them.
    root = Path(tempfile.mkdtemp(prefix="digitrec-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = "postgres" if _has_user("postgres") else "nobody"
        os.chmod(root, 0o777)
        as_user = ["runuser", "-u", user, "--"]
    data, port = root / "data", free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, cwd=root)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "digitrec", "-A", "trust", "--no-sync")
    options = f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w"]
    run(*pg_ctl, "-o", options, "-l", str(root / "log"), "start")
    try:
        yield f"postgresql://digitrec@127.0.0.1:{port}/postgres"
    finally:
        run(*pg_ctl, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str) -> str:
    """A new, empty database on the test server, its URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
