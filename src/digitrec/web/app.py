"""FastAPI server: the drawing page at ``/`` and a JSON API under ``/api``.

The Predictor is loaded once at start-up and shared; inference runs in the thread
pool so the event loop keeps serving. Every input error is a 4xx with a JSON
``detail`` saying what to fix: 413 for bodies and images over the limits, 415 for a
content type we do not read, 422 for data that is not a usable image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

import digitrec
from digitrec.errors import DigitrecError, ImageError, ImageTooLarge
from digitrec.predictor import Prediction, Predictor
from digitrec.preprocess import MAX_PIXELS, PixelBudget, Preprocessed
from digitrec.runs import resolve_model_path
from digitrec.web.schema import ERRORS, BatchBody, PredictionBody, request_body

STATIC = resources.files("digitrec.web") / "static"
SOURCE_ENV = "DIGITREC_MODEL_SOURCE"
BACKEND_ENV = "DIGITREC_BACKEND"
THREADS_ENV = "DIGITREC_THREADS"  # preprocessing threads per process (set by `serve`)
READY_WITHIN = 2.0  # seconds: a worker whose probe prediction takes longer is not ready
SHUTDOWN_SECONDS = 5  # graceful shutdown's bound: requests take milliseconds, a stuck one forever
log = logging.getLogger("digitrec.web")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS  # one image
    max_request_pixels: int = 2 * MAX_PIXELS  # all of a request's images, decoded
    max_batch: int = 256


class BadRequest(HTTPException):
    """An HTTPException whose detail is one plain sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)


class Coalescer:
    """Runs the model once for every request waiting, rather than once per request.

    Requests preprocess their images in worker threads, then queue them here. While the
    model works on one batch (or on a request that found it idle), the next requests
    queue up and go in the next call together: no added wait for a lone request, and
    under load the model sees batches, where it costs a fraction per image of what it
    costs one image at a time. ``busy`` is only touched on the event loop, so there is
    no lock.

    Preprocessing runs in at most ``threads`` threads at once (one per core the process
    has to itself). It is mostly Python holding the GIL: in one process, 8 threads
    preprocessed 596 canvas PNGs a second and 32 threads 384, against 876 for one thread
    alone, each image costing 2-3x the CPU time in the fight for the GIL. Requests
    beyond that wait their turn on the event loop, where waiting is free.
    """

    def __init__(self, max_batch: int = 256, threads: int = 1) -> None:
        self.max_batch = max_batch
        self.threads = threads
        self.limiter: anyio.CapacityLimiter | None = None  # made on the event loop
        self.waiting: list[tuple[Predictor, list[Preprocessed], asyncio.Future]] = []
        self.busy = False
        self.task: asyncio.Task | None = None
        self.answered = float("-inf")  # time.monotonic() of the last prediction made
        self.probe: asyncio.Task | None = None

    async def run(
        self, p: Predictor, prepare: Callable[[], list[Preprocessed]]
    ) -> list[Prediction]:
        """Preprocess and predict. A request that finds the model idle does both in one
        trip to a thread; otherwise it preprocesses beside the others and queues."""
        if self.busy:
            return await self.predict(p, await self._in_thread(prepare))
        self.busy = True
        try:
            preds = await self._in_thread(lambda: p.predict_preprocessed(prepare()))
            self.answered = time.monotonic()
            return preds
        finally:
            if self.waiting:  # those that came meanwhile
                self.task = asyncio.create_task(self._drain())
            else:
                self.busy = False

    async def ready(self, p: Predictor, within: float = READY_WITHIN) -> bool:
        """Whether a prediction can be made now: one was made in the last second, or a
        probe through the whole path (a queue slot, a preprocessing thread, the model)
        finishes within ``within`` seconds. A probe is never cancelled (a thread cannot
        be) and never doubled: a later call waits on the one still out."""
        if self.probe is None or self.probe.done():
            if time.monotonic() - self.answered < 1.0:
                return True
            self.probe = asyncio.create_task(self.run(p, lambda: p.prepare([PROBE])))
            # Its outcome read, so asyncio never logs a failed probe as unretrieved.
            self.probe.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, _ = await asyncio.wait({self.probe}, timeout=within)
        return bool(done) and not self.probe.cancelled() and self.probe.exception() is None

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    async def predict(self, p: Predictor, pre: list[Preprocessed]) -> list[Prediction]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((p, pre, future))
        if not self.busy:
            self.busy = True
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                p = self.waiting[0][0]
                jobs, size = [], 0
                # One call per predictor (the app has one; a test or embedder may not).
                while (
                    self.waiting
                    and self.waiting[0][0] is p
                    and (not jobs or size + len(self.waiting[0][1]) <= self.max_batch)
                ):
                    jobs.append(self.waiting.pop(0))
                    size += len(jobs[-1][1])
                flat = [item for _, pre, _ in jobs for item in pre]
                try:
                    preds = await run_in_threadpool(p.predict_preprocessed, flat)
                except Exception as exc:  # handed to each waiting request
                    for _, _, future in jobs:
                        if not future.done():  # done: the client went away
                            future.set_exception(exc)
                    continue
                self.answered = time.monotonic()
                start = 0
                for _, pre, future in jobs:
                    if not future.done():
                        future.set_result(preds[start : start + len(pre)])
                    start += len(pre)
        finally:
            self.busy = False


PROBE = np.zeros((28, 28), np.float32)  # what /readyz predicts: a "1", so the model runs
PROBE[4:24, 13:15] = 1.0


def png_base64(image: np.ndarray) -> str:
    """The 28x28 model input as a base64 PNG, for the page's "what the model saw" view."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode_base64_image(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(422, f"{where} must be a non-empty base64 string or data URL")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise BadRequest(422, f"{where}: only base64 data URLs are accepted")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(422, f"{where} is not valid base64") from None


def pixels_to_array(value: Any) -> np.ndarray:
    """784 numbers or 28 rows of 28, in [0, 1] or [0, 255], light digit on dark."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(422, "pixels must be numbers: 784 values or 28 rows of 28") from None
    if a.size != 784 or a.shape not in ((784,), (28, 28)):
        raise BadRequest(422, f"pixels has shape {a.shape}; send 784 values or 28 rows of 28")
    if not np.isfinite(a).all():
        raise BadRequest(422, "pixels contains NaN or infinite values")
    if a.min() < 0 or a.max() > 255:
        raise BadRequest(422, "pixels must lie in [0, 1] or [0, 255]")
    a = a.reshape(28, 28)
    return (a / 255.0 if a.max() > 1 else a).astype(np.float32)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    return b"".join([chunk async for chunk in limited_stream(request, limit)])


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, cut off with 413 once they pass ``limit`` bytes (a chunked
    upload declares no length to check beforehand)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over the {limit:,}-byte limit")
        yield chunk


def parse_json(body: bytes) -> Any:
    try:
        # Numbers as floats: an integer of over 4,300 digits is then infinite (and refused
        # as a pixel value), where int() raised a ValueError past Python's digit limit.
        return json.loads(body, parse_int=float)
    except RecursionError:
        raise BadRequest(422, "the JSON body is nested too deeply to be an image") from None
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise BadRequest(422, f"the body is not valid JSON ({exc})") from None


def json_item(item: Any, where: str) -> bytes | np.ndarray:
    if not isinstance(item, dict) or not ({"image", "pixels"} & item.keys()):
        raise BadRequest(422, f'{where} must be an object with "image" or "pixels"')
    if "pixels" in item:
        return pixels_to_array(item["pixels"])
    return decode_base64_image(item["image"], f"{where}.image")


def cores() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def env_int(name: str, default: int) -> int:
    """A count or size from the environment, at least 1: a bad one is named, not a traceback."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DigitrecError(f"{name}={raw!r}: give a whole number, e.g. {default}") from None
    if value < 1:
        raise DigitrecError(f"{name}={raw!r}: give 1 or more, e.g. {default}")
    return value


def limits_from_env() -> Limits:
    return Limits(
        max_body_bytes=env_int("DIGITREC_MAX_BODY_BYTES", Limits.max_body_bytes),
        max_pixels=env_int("DIGITREC_MAX_PIXELS", Limits.max_pixels),
        max_request_pixels=env_int("DIGITREC_MAX_REQUEST_PIXELS", Limits.max_request_pixels),
    )


def create_app(
    predictor: Predictor | None = None,
    model_path: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The app. Without a predictor it loads one at start-up by the usual resolution order."""
    limits = limits or limits_from_env()
    state: dict[str, Any] = {"predictor": predictor}
    coalescer = Coalescer(limits.max_batch, threads=env_int(THREADS_ENV, cores()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One request is a batch of one: intra-op threads only contend with each other
        # and with the preprocessing of concurrent requests. Parallelism comes from
        # requests (the thread pool) and from --workers.
        torch.set_num_threads(1)
        if state["predictor"] is None:
            state["predictor"] = Predictor.load(
                model_path, backend=os.environ.get(BACKEND_ENV, "auto")
            )
            # `digitrec serve` resolved the model before starting workers; say from where.
            state["predictor"].source = os.environ.get(SOURCE_ENV, state["predictor"].source)
        yield

    # FastAPI's own /docs loads Swagger UI from a CDN: a blank page offline.
    app = FastAPIOffline(
        title="digitrec",
        version=digitrec.__version__,
        description="Handwritten digit recognition. Draw at `/`, or POST images to `/api/predict`.",
        lifespan=lifespan,
    )

    def get_predictor() -> Predictor:
        p = state["predictor"]
        if p is None:
            raise BadRequest(503, "the model is still loading")
        return p

    def result(pred: Prediction, p: Predictor, started: float) -> dict[str, Any]:
        return {
            **pred.to_dict(),
            "image": png_base64(pred.image),
            "model": {"name": p.name, "version": model_version(p)},
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def run(items: list[bytes | np.ndarray], p: Predictor) -> list[Prediction]:
        try:
            budget = PixelBudget(limits.max_request_pixels)
            return await coalescer.run(p, lambda: p.prepare(items, limits.max_pixels, budget))
        except ImageTooLarge as exc:
            raise BadRequest(413, str(exc)) from None
        except ImageError as exc:
            raise BadRequest(422, str(exc)) from None

    async def read_form(request: Request) -> FormData:
        """The multipart form, parsed from the body cut off at its limit, its parser's
        errors in our words."""
        parser = MultiPartParser(
            request.headers,
            limited_stream(request, limits.max_body_bytes),
            max_files=limits.max_batch,
            max_part_size=limits.max_body_bytes,
        )
        try:
            return await parser.parse()
        except MultiPartException as exc:
            if "Too many files" in exc.message:
                raise BadRequest(422, f"send at most {limits.max_batch} files") from None
            raise BadRequest(
                422, f"the multipart upload cannot be read ({exc.message}); send a standard form"
            ) from None

    async def items_from(request: Request, batch: bool) -> list[bytes | np.ndarray]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                raise BadRequest(
                    413, f"the upload is over the {limits.max_body_bytes:,}-byte limit"
                )
            form = await read_form(request)
            try:
                field = "files" if batch else "file"
                files = [f for f in form.getlist(field) if hasattr(f, "read")]
                if not files:
                    raise BadRequest(422, f'send the image in a multipart field named "{field}"')
                return [await f.read() for f in files]
            finally:
                await form.close()
        body = await read_body(request, limits.max_body_bytes)
        if ctype.startswith("image/") and not batch:
            return [body]
        if ctype == "application/json":
            data = parse_json(body)
            if batch:
                if not isinstance(data, dict) or not isinstance(data.get("images"), list):
                    raise BadRequest(422, 'send {"images": [{"image": ...} or {"pixels": ...}]}')
                if not data["images"] or len(data["images"]) > limits.max_batch:
                    raise BadRequest(422, f"send between 1 and {limits.max_batch} images")
                return [json_item(it, f"images[{i}]") for i, it in enumerate(data["images"])]
            return [json_item(data, "the body")]
        accepted = (
            "multipart/form-data or application/json"
            if batch
            else ("multipart/form-data, image/png, image/jpeg, ... or application/json")
        )
        raise BadRequest(415, f"content type {ctype or '(none)'} is not accepted; send {accepted}")

    @app.post(
        "/api/predict",
        summary="Recognize one digit",
        response_model=None,
        responses={200: {"model": PredictionBody, "description": "The prediction"}, **ERRORS},
        openapi_extra=request_body(batch=False),
    )
    async def predict(request: Request) -> JSONResponse:
        """Send a multipart upload (field `file`), a raw image body (`image/png`,
        `image/jpeg`, ...), or JSON `{"image": "<base64 or data URL>"}` or
        `{"pixels": [784 values]}`."""
        started = time.perf_counter()
        p = get_predictor()
        items = await items_from(request, batch=False)
        [pred] = await run(items, p)
        # Our dicts are JSON already: a Response skips FastAPI's jsonable_encoder, which
        # walked every answer again (0.14 ms each, 35 ms for a batch of 256).
        return JSONResponse(result(pred, p, started))

    @app.post(
        "/api/predict/batch",
        summary="Recognize many digits",
        response_model=None,
        responses={200: {"model": BatchBody, "description": "One per image"}, **ERRORS},
        openapi_extra=request_body(batch=True),
    )
    async def predict_batch(request: Request) -> JSONResponse:
        """Multipart (fields `files`) or JSON `{"images": [{"image": ...}, {"pixels": ...}]}`."""
        started = time.perf_counter()
        p = get_predictor()
        preds = await run(await items_from(request, batch=True), p)
        return JSONResponse({"predictions": [result(pr, p, started) for pr in preds]})

    @app.get("/api/model", summary="The loaded model", responses={503: ERRORS[503]})
    async def model() -> dict[str, Any]:
        p = get_predictor()
        meta = p.meta
        return {
            "name": p.name,
            "version": model_version(p),
            "parameters": meta.get("params"),
            "classes": p.classes,
            "test_accuracy": meta.get("test_accuracy"),
            "validation_accuracy": (meta.get("metrics") or {}).get("val_acc"),
            "epoch": meta.get("epoch"),
            "run": meta.get("run"),
            "recipe": meta.get("recipe"),
            "command": meta.get("command"),
            "trained": meta.get("created"),
            "source": p.source,
            "backend": p.backend,
        }

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: a prediction can be made now",
        responses={503: {"description": 'Not now: `{"ready": false, "reason": "..."}`'}},
    )
    async def readyz() -> JSONResponse:
        p = state["predictor"]
        if p is None:
            return JSONResponse({"ready": False, "reason": "loading the model"}, status_code=503)
        if not await coalescer.ready(p):
            reason = f"no prediction could be made within {READY_WITHIN:g} s: busy or stuck"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(ErrorsAnsweredAsJSON)
    return app


class ErrorsAnsweredAsJSON:
    """The app's last line of defence, inside Starlette's own: an unexpected error is
    answered as a JSON 500 on a connection that stays usable (Starlette's answer re-raised
    the error, and uvicorn then dropped the connection with no `Connection: close`), and
    a client that went away mid-body is one log line, not a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            log.info("%s %s: the client went away mid-body", scope["method"], scope["path"])
        except Exception:
            if started:  # half an answer is out: closing the connection is the only end
                raise
            log.exception("%s %s: unexpected error", scope["method"], scope["path"])
            detail = (
                "digitrec failed on this request (a bug, logged on the server); retry or report it"
            )
            await JSONResponse({"detail": detail}, status_code=500)(scope, receive, send)


def model_version(p: Predictor) -> str:
    """Which weights: the run they came from and the epoch chosen on validation (an
    ensemble or a weight average, the shipped model among them, has no epoch)."""
    run, epoch = p.meta.get("run") or "unknown", p.meta.get("epoch")
    return run if epoch is None else f"{run}@{epoch}"


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with Nagle's algorithm turned off on every connection.

    With ``--workers N`` uvicorn binds the listening socket itself, leaving its protocol
    number at 0, and asyncio then leaves Nagle on for the connections it accepts: every
    keep-alive request after the first waited for the client's delayed ACK, a 44 ms
    floor for a lone user of the page (Kludex/uvicorn#3149). One worker was unaffected.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def serve(
    host: str, port: int, model_path: str | None, workers: int, backend: str = "auto"
) -> None:
    """`digitrec serve`: resolve the model here (so a bad path fails before the server
    starts), then run uvicorn; several workers each load it once."""
    import uvicorn

    if workers < 1:
        raise DigitrecError(f"--workers {workers}: give 1 or more (one per core serves most)")
    limits_from_env()  # a bad limit fails here, once, not in every worker
    path, source = resolve_model_path(model_path)
    p = Predictor.load(path, backend=backend)  # fail now, clearly, not in every worker
    os.environ["DIGITREC_MODEL"] = str(path)
    os.environ[SOURCE_ENV] = source
    os.environ[BACKEND_ENV] = backend
    os.environ[THREADS_ENV] = str(max(1, cores() // workers))  # a core each
    check_port(host, port)
    print(f"digitrec: open http://{host}:{port}/ (model {path}, {p.backend})", flush=True)
    uvicorn.run(
        "digitrec.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=f"{__name__}:NoDelayHTTP",
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )


def check_port(host: str, port: int) -> None:
    """Fail before printing an address that will not answer: uvicorn reports a port in
    use only after start-up, as a log line under that address, and exits with 3."""
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise DigitrecError(
            f"cannot listen on {host}:{port} ({reason}): is another server using that port? "
            "Stop it, or choose another --port"
        ) from None
