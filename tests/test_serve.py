"""The server on real connections: what a broken request, a vanished client, a stuck
worker and a shutdown do to it (uvicorn in this process, or `digitrec serve` itself)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from conftest import free_port, wait_ready
from digitrec.predictor import Predictor
from digitrec.runs import shipped_model_path
from digitrec.web.app import create_app
from digitrec.web.coalescer import PROBE
from digitrec.web.server import NoDelayHTTP
from digitrec.web.settings import SHUTDOWN_SECONDS


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_model_path())


class Failing(Predictor):
    """A model call that fails as a bug would (nothing a client sent can cause it)."""

    def predict_preprocessed(self, pre, tta=False):
        raise RuntimeError("a bug")


@contextlib.contextmanager
def uvicorn_serving(app) -> Iterator[tuple[str, int]]:
    """uvicorn on a free loopback port with digitrec's HTTP protocol, in a thread."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=NoDelayHTTP, log_level="info", log_config=None
    )
    sock = config.bind_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", 0)))


def test_an_unexpected_error_is_answered_as_json_on_a_connection_that_stays_usable():
    """Starlette's 500 re-raised the error and uvicorn then dropped the connection with
    no `Connection: close`: a keep-alive client's next request met a reset."""
    app = create_app(Failing.load(shipped_model_path()))
    with uvicorn_serving(app) as address, socket.create_connection(address, timeout=30) as s:
        f = s.makefile("rb")
        body = json.dumps({"pixels": [0.5] * 784}).encode()
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, headers, answer = read_response(f)
        assert status == 500 and "bug" in json.loads(answer)["detail"]
        assert headers["content-type"] == "application/json"
        assert headers.get("connection") != "close"
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")  # the same connection
        assert read_response(f)[::2] == (200, b'{"status":"ok"}')


def test_a_client_gone_mid_body_is_one_log_line(predictor, caplog):
    """Each disconnect logged a ClientDisconnect traceback (3,003 of them after a test of
    slow connections)."""
    caplog.set_level(logging.INFO)
    with uvicorn_serving(create_app(predictor)) as (host, port):
        for _ in range(3):
            with socket.create_connection((host, port), timeout=30) as s:
                s.sendall(
                    b"POST /api/predict HTTP/1.1\r\nhost: t\r\ncontent-type: image/png\r\n"
                    b"content-length: 5000\r\n\r\n" + b"x" * 100
                )
                time.sleep(0.2)  # the server is reading the body
        time.sleep(0.5)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "mid-body" in r.message]
    assert len(lines) == 3
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_readiness_says_no_while_the_only_worker_thread_is_stuck(monkeypatch):
    """/readyz said ready while the worker could answer nothing (an EPS upload had
    Ghostscript loop forever): it now asks the prediction path itself."""
    gate = threading.Event()

    class Stuck(Predictor):
        @staticmethod
        def prepare(images, max_pixels=None, budget=None):
            if images and isinstance(images[0], bytes) and images[0] == b"stuck":
                gate.wait(60)
            return Predictor.prepare(images, max_pixels, budget)

    monkeypatch.setenv("DIGITREC_THREADS", "1")
    with TestClient(create_app(Stuck.load(shipped_model_path()))) as c:
        assert c.get("/readyz").json() == {"ready": True}
        stuck = threading.Thread(
            target=c.post,
            args=("/api/predict",),
            kwargs={"content": b"stuck", "headers": {"content-type": "image/png"}},
        )
        stuck.start()
        try:
            time.sleep(1.5)  # past the second in which the last answer vouches for readiness
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            assert "busy or stuck" in r.json()["reason"]
            assert c.get("/healthz").status_code == 200  # alive all the same
        finally:
            gate.set()
            stuck.join(timeout=60)
        assert c.get("/readyz").json() == {"ready": True}


def children(pid: int) -> set[int]:
    """Every process below ``pid`` (uvicorn's workers and whatever they started)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            kids = (task / "children").read_text().split() if (task / "children").exists() else []
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_serve_ends_on_sigterm_with_a_request_stuck_and_leaves_no_process(tmp_path):
    """Graceful shutdown waited on a stuck request forever; now it is bounded, and no
    worker outlives the server."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--workers", "2",
         "--model-path", str(shipped_model_path())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("server did not start")
        workers = children(proc.pid)
        assert len(workers) >= 2
        for _ in range(4):  # answers from either worker
            body = json.dumps({"pixels": PROBE.tolist()}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/predict", body, {"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                assert json.loads(r.read())["digit"] == 1
        # An upload that stops after 10 of its 1,000 bytes: the request never ends.
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(
                b"POST /api/predict HTTP/1.1\r\nhost: t\r\ncontent-type: image/png\r\n"
                b"content-length: 1000\r\n\r\n0123456789"
            )
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SHUTDOWN_SECONDS + 30)
            except subprocess.TimeoutExpired:
                pytest.fail("`digitrec serve` did not exit after SIGTERM")
            took = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
        assert took < SHUTDOWN_SECONDS + 30
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if alive(w)], "a worker outlived the server"
    finally:
        if proc.poll() is None:
            for w in children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w, signal.SIGKILL)
            proc.kill()
            proc.wait()


def test_a_promoted_model_is_served_without_a_restart_or_a_failed_request(
    tmp_path, trained_run, mnist
):
    """`digitrec serve` on the usual resolution follows the registry: under load, a
    promotion is picked up by polling, a rollback by POST /api/model/reload, no request
    fails, and every answer names the model that made it."""
    from PIL import Image

    from digitrec import registry
    from digitrec.export import sha256

    env = {**os.environ, "DIGITREC_HOME": str(tmp_path / "home"),
           "DIGITREC_RUNS_DIR": str(tmp_path / "no-runs")}  # fmt: skip
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    image = io.BytesIO()
    Image.fromarray(255 - mnist.test_images[0].numpy()).save(image, "PNG")
    answers: list[list[tuple[int, str | None, int | None]]] = [[] for _ in range(3)]
    stop = threading.Event()

    def load(mine: list) -> None:
        while not stop.is_set():
            req = urllib.request.Request(url + "/api/predict", data=image.getvalue(),
                                         headers={"content-type": "image/png"})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    body = json.loads(r.read())
                    mine.append((r.status, body["model"]["sha256"],
                                 body["model"]["registry_version"]))  # fmt: skip
            except urllib.error.HTTPError as exc:
                mine.append((exc.code, None, None))

    def model() -> dict:
        with urllib.request.urlopen(url + "/api/model", timeout=10) as r:
            return json.loads(r.read())

    try:
        wait_ready(url, proc)
        assert model()["registry_version"] == 0 and model()["source"] == "shipped default"
        threads = [threading.Thread(target=load, args=(a,)) for a in answers]
        for t in threads:
            t.start()
        time.sleep(1)
        os.environ["DIGITREC_HOME"], old_home = env["DIGITREC_HOME"], os.environ["DIGITREC_HOME"]
        try:
            v1 = registry.promote(trained_run.run_dir / "best.safetensors", "test", {}, None)
            deadline = time.monotonic() + 30
            while model()["registry_version"] != 1:
                assert time.monotonic() < deadline, "the promoted model was not picked up"
                time.sleep(0.2)
            time.sleep(1)
            registry.rollback()
            req = urllib.request.Request(url + "/api/model/reload", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                reloaded = json.loads(r.read())
        finally:
            os.environ["DIGITREC_HOME"] = old_home
        assert reloaded["changed"] and reloaded["registry_version"] == 0
        time.sleep(1)
    finally:
        stop.set()
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    shipped, new = sha256(shipped_model_path()), sha256(v1.path)
    for mine in answers:
        assert mine and all(status == 200 for status, _, _ in mine), out
        seen = [(sha, version) for _, sha, version in mine]
        assert set(seen) == {(shipped, 0), (new, 1)}, set(seen)
        # one model, then the other, then the first again: each swap is clean
        changes = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
        assert len(changes) == 2, changes
    assert "now serving" in out and "Traceback" not in out


def test_a_server_started_on_a_named_model_keeps_it(predictor):
    with TestClient(create_app(predictor)) as client:
        r = client.post("/api/model/reload")
        assert r.status_code == 409 and "--model-path" in r.json()["detail"]
