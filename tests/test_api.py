"""The REST API through FastAPI's TestClient: every input form and every bad input."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import encode, run_cli
from digitrec.checkpoint import read_meta
from digitrec.errors import DigitrecError, ImageError
from digitrec.predictor import Predictor
from digitrec.preprocess import FORMAT_NAMES, FORMATS
from digitrec.runs import shipped_model_path
from digitrec.web.app import create_app
from digitrec.web.coalescer import Coalescer
from digitrec.web.server import NoDelayHTTP
from digitrec.web.settings import Limits

SHIPPED = read_meta(shipped_model_path())


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_model_path())


@pytest.fixture(scope="module")
def client(predictor):
    app = create_app(predictor, limits=Limits(max_body_bytes=2_000_000, max_pixels=4_000_000))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def digits(mnist):
    """Ten test digits drawn as dark ink on a white 280 px canvas, with their labels."""
    out = []
    for i in range(10):
        d = mnist.test_images[i].numpy()
        big = Image.fromarray(255 - d).resize((280, 280), Image.Resampling.BILINEAR)
        out.append((encode(np.asarray(big)), int(mnist.test_labels[i]), d))
    return out


def check(r, label: int) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["digit"] == label
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-3
    img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert img.size == (28, 28)
    assert body["model"]["name"] == SHIPPED["model"] and body["latency_ms"] > 0
    assert isinstance(body["uncertain"], bool)
    return body


def test_every_input_form(client, digits):
    data, label, raw = digits[0]
    check(client.post("/api/predict", files={"file": ("d.png", data, "image/png")}), label)
    check(client.post("/api/predict", content=data, headers={"content-type": "image/png"}), label)
    b64 = base64.b64encode(data).decode()
    check(client.post("/api/predict", json={"image": b64}), label)
    check(client.post("/api/predict", json={"image": "data:image/png;base64," + b64}), label)
    check(client.post("/api/predict", json={"pixels": raw.ravel().tolist()}), label)
    check(client.post("/api/predict", json={"pixels": (raw / 255).tolist()}), label)
    jpg = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(jpg, "JPEG", quality=90)
    r = client.post("/api/predict", content=jpg.getvalue(), headers={"content-type": "image/jpeg"})
    check(r, label)


def test_batch(client, digits):
    images = [{"image": base64.b64encode(d).decode()} for d, _, _ in digits]
    images.append({"pixels": digits[0][2].tolist()})
    r = client.post("/api/predict/batch", json={"images": images})
    assert r.status_code == 200, r.text
    got = [p["digit"] for p in r.json()["predictions"]]
    want = [label for _, label, _ in digits] + [digits[0][1]]
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 10
    files = [("files", (f"{i}.png", d, "image/png")) for i, (d, _, _) in enumerate(digits[:3])]
    r = client.post("/api/predict/batch", files=files)
    assert [p["digit"] for p in r.json()["predictions"]] == [lbl for _, lbl, _ in digits[:3]]


def test_blank_canvas_is_no_digit(client):
    r = client.post("/api/predict", content=encode(np.full((280, 280), 255, np.uint8)),
                    headers={"content-type": "image/png"})  # fmt: skip
    assert r.status_code == 200
    assert r.json()["blank"] is True and r.json()["digit"] is None


TRUNCATED = encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:200]


MULTIPART_BIG = [
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
    b"Content-Type: image/png\r\n\r\n",
    *[b"x" * 100_000] * 21,
    b"\r\n--b--\r\n",
]


EPS_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{} loop\n"
READ_ONLY = f"not a readable image ({FORMAT_NAMES} are read)"


def bomb() -> bytes:
    """A few kilobytes of PNG that decode to 100 million pixels."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "not accepted"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422, "empty"),
        ({"content": TRUNCATED, "headers": {"content-type": "image/png"}}, 422, "corrupt"),
        ({"content": b"not an image at all", "headers": {"content-type": "image/png"}},
         422, "not a readable image"),
        ({"content": bomb(), "headers": {"content-type": "image/png"}}, 413, "pixel limit"),
        ({"content": b"x" * 2_000_001, "headers": {"content-type": "image/png"}}, 413,
         "the body is over the 1.9 MB limit"),
        ({"content": b'{"pixels": [NaN' + b", 0" * 783 + b"]}",
          "headers": {"content-type": "application/json"}}, 422, "NaN"),
        ({"json": {"pixels": [0.5] * 100}}, 422, "784"),
        ({"json": {"pixels": [[1, 2], [3]]}}, 422, "pixels"),
        ({"json": {"pixels": [300] * 784}}, 422, "[0, 255]"),
        ({"json": {"image": "%%%not base64"}}, 422, "base64"),
        ({"json": {"image": 123}}, 422, "non-empty base64 string"),
        ({"json": {"image": "data:image/png,iVBORw0KGgo="}}, 422, "only base64 data URLs"),
        ({"content": (b"x" * 100_000 for _ in range(21)),  # chunked: no content-length
          "headers": {"content-type": "image/png"}}, 413, "the body is over the 1.9 MB limit"),
        ({"json": {"picture": "x"}}, 422, '"image" or "pixels"'),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"files": {"upload": ("d.png", b"x", "image/png")}}, 422, '"file"'),
        ({"files": {"file": ("empty.png", b"", "image/png")}}, 422, "empty"),
        ({"files": {"file": ("big.png", b"x" * 4_000_000, "image/png")}}, 413,
         "the upload is 3.8 MB, over the 1.9 MB limit"),
        ({"content": b"--b\r\n[]--b--\r\n",  # found by schemathesis: was a 400
          "headers": {"content-type": "multipart/form-data; boundary=b"}}, 422, "cannot be read"),
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 422, "boundary"),
        ({"content": (part for part in MULTIPART_BIG),  # chunked: no content-length to check
          "headers": {"content-type": "multipart/form-data; boundary=b"}}, 413, "body is over"),
        # JSON that broke the parser: a RecursionError and a ValueError, both were 500s
        ({"content": b'{"pixels": ' + b"[" * 990 + b"]" * 990 + b"}",
          "headers": {"content-type": "application/json"}}, 422, "nested too deeply"),
        ({"content": b'{"pixels": [' + b"7" * 4301 + b", 0" * 783 + b"]}",
          "headers": {"content-type": "application/json"}}, 422, "NaN or infinite"),
        # Ghostscript ran on this one (an endless loop pinned the worker); now never decoded
        ({"content": EPS_LOOP, "headers": {"content-type": "image/png"}}, 422, READ_ONLY),
        ({"files": {"file": ("loop.eps", EPS_LOOP, "application/postscript")}}, 422, READ_ONLY),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_with_a_reason(client, kwargs, status, words):
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


# Formats Pillow decodes but digitrec does not: each a real file of that format.
OTHER_FORMATS = ["TGA", "PCX", "SGI", "PPM", "ICO", "JPEG2000", "XBM", "DDS", "IM", "QOI"]


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_only_the_listed_formats_are_decoded(client, digits, fmt):
    """PIL's plugins are many (EPS runs Ghostscript); the server decodes the six it names."""
    img = Image.open(io.BytesIO(digits[0][0])).convert("1" if fmt == "XBM" else "RGB")
    buf = io.BytesIO()
    img.save(buf, fmt)
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 422 and r.json()["detail"].endswith(READ_ONLY), r.text


@pytest.mark.parametrize("fmt", [f.pil for f in FORMATS] + ["MPO"])
def test_every_listed_format_is_read(client, digits, fmt):
    """MPO is the multi-picture JPEG some phone cameras write: opened as a JPEG."""
    data, label, _ = digits[0]
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    r = client.post("/api/predict", content=encode(rgb, fmt), headers={"content-type": "image/png"})
    check(r, label)


def test_a_request_has_a_budget_of_decoded_pixels(predictor, digits):
    """Each image under the pixel limit, but together over the request's budget: 413
    before the image that crosses it is decoded (70 such images held a worker 54 s)."""
    app = create_app(predictor, limits=Limits(max_pixels=1_000_000, max_request_pixels=2_000_000))
    big = encode(np.full((1000, 900), 255, np.uint8), "PNG")  # 0.9 MP each
    with TestClient(app) as c:
        two = {"images": [{"image": base64.b64encode(big).decode()}] * 2}
        assert c.post("/api/predict/batch", json=two).status_code == 200
        three = {"images": two["images"] * 2}
        r = c.post("/api/predict/batch", json=three)
        assert r.status_code == 413 and "budget of 2,000,000 decoded pixels" in r.json()["detail"]
        files = [("files", (f"{i}.png", big, "image/png")) for i in range(3)]
        assert c.post("/api/predict/batch", files=files).status_code == 413
        # one of them, in a request of its own, is fine
        r = c.post("/api/predict", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["blank"]


def test_the_formats_are_named_the_same_everywhere(client):
    """One list (preprocess.FORMATS): what is decoded, the 422's words, /docs' request
    types, the page's file picker and its message, the CLI's help."""
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {k for k in content if k.startswith("image/")} == {f.mime for f in FORMATS}
    assert FORMAT_NAMES in spec["paths"]["/api/predict"]["post"]["responses"]["422"]["description"]
    page = client.get("/").text
    # The picker offers every image (phones then offer the camera too); what is read, the
    # page shows and says from /api/limits (the browser test reads its words).
    assert re.findall(r'accept="([^"]+)"', page) == ["image/*", "image/*"]
    assert client.get("/api/limits").json()["formats"] == [f.name for f in FORMATS]
    assert FORMAT_NAMES in " ".join(run_cli("predict", "--help").stdout.split())


def test_bad_batches(client):
    assert client.post("/api/predict/batch", json={"images": []}).status_code == 422
    r = client.post("/api/predict/batch", json={"images": [{"pixels": [1] * 784}, {"x": 1}]})
    assert r.status_code == 422 and "images[1]" in r.json()["detail"]
    r = client.post("/api/predict/batch", content=b"x", headers={"content-type": "image/png"})
    assert r.status_code == 415
    r = client.post("/api/predict/batch", json={"image": "x"})
    assert r.status_code == 422 and '{"images": [' in r.json()["detail"]


def test_openapi_documents_every_body_and_error(client, digits):
    """/docs shows what each endpoint reads and every status it answers with (checked
    against the server by schemathesis: 1,139 generated requests, no undocumented status,
    no 500, responses matching their schemas)."""
    spec = client.get("/openapi.json").json()
    one, many = spec["paths"]["/api/predict"]["post"], spec["paths"]["/api/predict/batch"]["post"]
    assert {"multipart/form-data", "image/png", "application/json"} <= set(
        one["requestBody"]["content"]
    )
    assert set(many["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    for op in (one, many):
        assert {"200", "413", "415", "422", "503"} <= set(op["responses"])
    schema = spec["components"]["schemas"]["PredictionBody"]
    answer = client.post("/api/predict", files={"file": ("d.png", digits[0][0], "image/png")})
    assert set(answer.json()) == set(schema["properties"])  # the documented fields, all of them


def test_model_health_and_docs(client):
    m = client.get("/api/model").json()
    assert m["name"] == SHIPPED["model"] and m["parameters"] > 0
    assert m["test_accuracy"] == SHIPPED["test_accuracy"]
    assert m["command"].startswith("digitrec train")
    # the shipped model, a weight average, has a run and no epoch: its version is the run
    assert "epoch" not in SHIPPED and m["version"] == SHIPPED["run"] == "shipped"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # Swagger UI served offline
    for asset in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text):
        assert client.get(asset).status_code == 200, asset
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/static/app.js").status_code == 200
    for external in ("http://", "https://"):  # self-contained: no CDN
        assert external not in page.text
        assert external not in client.get("/static/app.js").text


def test_junk_is_answered_not_a_digit_and_the_model_names_its_detector(client, digits):
    from digitrec import outliers

    scribble = outliers.scribble(np.random.default_rng([5, 9000]))
    answer = client.post("/api/predict", files={"file": ("s.png", scribble, "image/png")}).json()
    assert answer["not_a_digit"] and answer["digit"] is None and answer["uncertain"]
    digit = client.post("/api/predict", files={"file": ("d.png", digits[0][0], "image/png")})
    assert digit.json()["not_a_digit"] is False and digit.json()["digit"] == digits[0][1]
    detector = client.get("/api/model").json()["not_a_digit"]
    assert detector["detector"] == "default.notdigit.safetensors" and detector["threshold"] > 0
    field = client.get("/openapi.json").json()["components"]["schemas"]["PredictionBody"]
    assert "scribble" in field["properties"]["not_a_digit"]["description"]  # in /docs


def test_concurrent_requests_get_their_own_answers(client, digits):
    answers: dict[int, int] = {}

    def post(k: int) -> None:
        data, _, _ = digits[k % len(digits)]
        r = client.post("/api/predict", content=data, headers={"content-type": "image/png"})
        answers[k] = r.json()["digit"]

    threads = [threading.Thread(target=post, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = {k: client.post("/api/predict", content=digits[k][0],
                            headers={"content-type": "image/png"}).json()["digit"]
             for k in range(len(digits))}  # fmt: skip
    assert all(answers[k] == alone[k % len(digits)] for k in answers)


def test_the_int8_backend_serves_the_shipped_models_int8_copy(client, digits):
    """`serve --backend int8`: the int8 copy shipped beside the model, named as such in
    /api/model, reading the same digits as the float model."""
    app = create_app(Predictor.load(shipped_model_path(), backend="int8"))
    with TestClient(app) as c:
        assert c.get("/api/model").json()["backend"] == "onnx int8"
        for data, label, _ in digits:
            r = c.post("/api/predict", content=data, headers={"content-type": "image/png"})
            assert r.json()["digit"] == label
    assert client.get("/api/model").json()["backend"] == "onnx"


@pytest.mark.parametrize("threads", [1, 2])
def test_preprocessing_runs_in_at_most_its_threads(predictor, digits, threads):
    """Beyond ``threads`` requests at once, the rest wait on the event loop instead of
    fighting over the GIL in more threads; every request still gets its answer."""
    import asyncio

    running, peak, lock, full = [0], [0], threading.Lock(), threading.Event()

    def prepare(data: bytes):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] == threads:
                full.set()
        full.wait(10)  # every allowed thread at work at once, so the peak reaches the cap
        time.sleep(0.02)  # the work: a thread over the cap would start meanwhile
        with lock:
            running[0] -= 1
        return predictor.prepare([data])

    async def main():
        c = Coalescer(threads=threads)
        jobs = [c.run(predictor, lambda d=d: prepare(d)) for d, _, _ in digits]
        return await asyncio.gather(*jobs)

    answers = asyncio.run(main())
    assert [a[0].digit for a in answers] == [label for _, label, _ in digits]
    assert peak[0] == threads


def test_a_server_whose_model_is_missing_does_not_start(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_MODEL", str(tmp_path / "missing.safetensors"))
    from digitrec.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint"), TestClient(create_app()):
        pass


def test_before_its_model_is_loaded_the_server_says_so_with_503s(tmp_path, monkeypatch):
    """Requests that arrive before start-up has loaded the model (TestClient outside a
    `with` does not run the start-up)."""
    c = TestClient(create_app(model_path=str(shipped_model_path())))
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json() == {"ready": False, "reason": "loading the model"}
    for r in (c.get("/api/model"), c.post("/api/predict", json={"pixels": [0] * 784})):
        assert r.status_code == 503 and r.json() == {"detail": "the model is still loading"}
    assert c.get("/healthz").status_code == 200


def test_json_errors_are_json(client):
    r = client.post("/api/predict", content=b"[]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and json.loads(r.text)["detail"]


def test_waiting_requests_share_one_model_call(mnist):
    """The Coalescer: 30 requests arriving together get their own answers from a couple
    of batched model calls instead of 30."""
    import asyncio

    class Counting(Predictor):
        batches: ClassVar[list[int]] = []
        hold: ClassVar[list[Callable[[], None]]] = []  # run before the next call, once

        def predict_preprocessed(self, pre, tta=False):
            self.batches.append(len(pre))
            while self.hold:
                self.hold.pop()()
            return super().predict_preprocessed(pre, tta)

    p = Counting.load(shipped_model_path())
    pre = p.prepare([encode(mnist.test_images[i].numpy()) for i in range(30)])
    alone = [q.digit for q in p.predict_preprocessed(pre)]
    p.batches.clear()

    async def main():
        c = Coalescer(max_batch=256)
        return await asyncio.gather(*(c.predict(p, [item]) for item in pre))

    answers = asyncio.run(main())
    assert [a[0].digit for a in answers] == alone
    assert sum(p.batches) == 30 and len(p.batches) <= 3, p.batches

    # Through `run` (preprocessing included): the first request finds the model idle and
    # goes alone, in one trip to the thread pool; those arriving meanwhile are batched.
    # The first call is held until the other 29 have preprocessed and queued, so how the
    # threads happen to be scheduled cannot split them (on a loaded machine it did).
    pngs = [encode(mnist.test_images[i].numpy()) for i in range(30)]
    p.batches.clear()

    async def through_run():
        c = Coalescer(max_batch=256, threads=2)  # one thread held below, one preprocessing

        def until_29_wait():
            deadline = time.monotonic() + 60
            while len(c.waiting) < 29 and time.monotonic() < deadline:
                time.sleep(0.005)

        p.hold.append(until_29_wait)
        out = await asyncio.gather(*(c.run(p, lambda b=b: p.prepare([b])) for b in pngs))
        return out, c.busy

    answers, busy = asyncio.run(through_run())
    assert [a[0].digit for a in answers] == alone and not busy
    assert p.batches == [1, 29], p.batches

    async def broken_then_fine():
        c = Coalescer()
        with pytest.raises(ImageError):
            await c.run(p, lambda: p.prepare([b"not an image"]))
        return c.busy, await c.run(p, lambda: p.prepare([pngs[0]]))

    busy, [again] = asyncio.run(broken_then_fine())
    assert not busy and again.digit == alone[0]


def test_nagle_is_off_on_connections_to_a_socket_bound_as_for_several_workers():
    """`serve --workers N` has uvicorn bind the socket itself (Config.bind_socket), and
    asyncio leaves Nagle's algorithm on for what such a socket accepts: each keep-alive
    request after the first then waited ~44 ms for the client's delayed ACK. A real
    uvicorn server on such a socket, asked over a real connection."""
    import asyncio
    import socket

    import uvicorn
    from fastapi import FastAPI
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    app = FastAPI()

    @app.get("/")
    async def root() -> dict:
        return {"ok": True}

    async def nodelay(http: type) -> int:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, log_level="warning")
        sock = config.bind_socket()
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        [conn] = server.server_state.connections
        value = conn.transport.get_extra_info("socket").getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY
        )
        writer.close()
        server.should_exit = True
        await task
        sock.close()
        return value

    assert asyncio.run(nodelay(AutoHTTPProtocol)) == 0, "uvicorn fixed it: NoDelayHTTP can go"
    assert asyncio.run(nodelay(NoDelayHTTP)) != 0


@pytest.mark.slow
def test_serve_with_no_workers_says_so():
    """`--workers 0` divided the cores among no processes: a ZeroDivisionError traceback."""
    r = run_cli("serve", "--workers", "0", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error: --workers 0: give 1 or more" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("value, says", [("10M", "give a whole number"), ("0", "give 1 or more")])
def test_a_bad_limit_in_the_environment_is_named(monkeypatch, value, says):
    """They were read with int(): `DIGITREC_MAX_PIXELS=10M` stopped the server with a
    ValueError traceback from every worker."""
    r = run_cli("serve", env={"DIGITREC_MAX_PIXELS": value}, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: DIGITREC_MAX_PIXELS={value!r}: {says}, e.g. " in r.stderr
    monkeypatch.setenv("DIGITREC_THREADS", value)
    with pytest.raises(DigitrecError, match=f"DIGITREC_THREADS=.*{says}"):
        create_app(Predictor.load(shipped_model_path()))


@pytest.mark.slow
def test_serve_on_a_port_in_use_says_so_before_printing_an_address():
    """uvicorn would print our "open http://..." line, then log the bind error and exit 3."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = run_cli("serve", "--port", str(port), timeout=60)
    assert r.returncode == 2 and "open http" not in r.stdout
    assert f"error: cannot listen on 127.0.0.1:{port} (Address already in use)" in r.stderr


def test_limits_say_what_is_accepted_in_the_words_every_error_uses(client):
    """One list of formats and one size for the page's upload line and every error."""
    from digitrec.preprocess import FORMAT_NAMES

    r = client.get("/api/limits").json()
    assert r["accepted"] == f"{FORMAT_NAMES}, up to 1.9 MB"
    assert r["formats"][-1] == "TIFF" and "image/tiff" in r["mime_types"]
    assert r["format_names"] == FORMAT_NAMES
    refused = client.post("/api/predict", content=b"x" * 2_000_001,
                          headers={"content-type": "image/png"})  # fmt: skip
    assert refused.json()["detail"].endswith("over the 1.9 MB limit")
    fake = client.post("/api/predict", files={"file": ("a.png", b"not a png", "image/png")})
    assert f"({FORMAT_NAMES} are read)" in fake.json()["detail"]
