"""The endpoints: the page, prediction, the model's record, liveness and readiness. What
each needs (the predictor, the limits, the coalescer) comes as a dependency from the app's
state, which `create_app` fills."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image

from digitrec.errors import CheckpointError, DigitrecError, ImageError, ImageTooLarge
from digitrec.feedback import FeedbackError, FeedbackStore, correction_of
from digitrec.predictor import Prediction, Predictor
from digitrec.preprocess import FORMAT_NAMES, FORMATS, PixelBudget, size_text
from digitrec.reading import read
from digitrec.web import live
from digitrec.web.bodies import BadRequest, correction_from, items_from
from digitrec.web.coalescer import Coalescer
from digitrec.web.recent import KEEP_SECONDS, Recent
from digitrec.web.schema import (
    ERRORS,
    BatchBody,
    FeedbackBody,
    PredictionBody,
    ReadingBody,
    error_doc,
    feedback_body,
    request_body,
)
from digitrec.web.settings import READY_WITHIN, Limits

STATIC = resources.files("digitrec.web") / "static"


async def current_predictor(request: Request) -> Predictor:
    p = request.app.state.predictor
    if p is None:
        raise BadRequest(503, "the model is still loading")
    return p


async def current_limits(request: Request) -> Limits:
    return request.app.state.limits


async def current_coalescer(request: Request) -> Coalescer:
    return request.app.state.coalescer


async def current_recent(request: Request) -> Recent:
    return request.app.state.recent


async def current_store(request: Request) -> FeedbackStore:
    return request.app.state.feedback


# Dependencies as async functions: FastAPI runs plain ones in a thread, a hop per request.
PredictorDep = Annotated[Predictor, Depends(current_predictor)]
LimitsDep = Annotated[Limits, Depends(current_limits)]
CoalescerDep = Annotated[Coalescer, Depends(current_coalescer)]
RecentDep = Annotated[Recent, Depends(current_recent)]
StoreDep = Annotated[FeedbackStore, Depends(current_store)]

router = APIRouter()


def png_base64(image: np.ndarray) -> str:
    """The 28x28 model input as a base64 PNG, for the page's "what the model saw" view."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def model_version(p: Predictor) -> str:
    """Which weights: the run they came from and the epoch chosen on validation (an
    ensemble or a weight average, the shipped model among them, has no epoch)."""
    run, epoch = p.meta.get("run") or "unknown", p.meta.get("epoch")
    return run if epoch is None else f"{run}@{epoch}"


def model_ref(p: Predictor) -> dict[str, Any]:
    """Which model made an answer: its name, its run and epoch, its id, its registry
    version (a server swaps models as it serves: each answer says which it got)."""
    return {"name": p.name, "version": model_version(p), "sha256": p.sha256,
            "registry_version": p.registry_version}  # fmt: skip


def answer(pred: Prediction, p: Predictor, started: float, prediction_id: str) -> dict[str, Any]:
    return {
        "prediction_id": prediction_id,
        **pred.to_dict(),
        "image": png_base64(pred.image),
        "model": model_ref(p),
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }


@contextmanager
def image_errors() -> Iterator[None]:
    """An image over a limit is a 413, one that cannot be read a 422."""
    try:
        yield
    except ImageTooLarge as exc:
        raise BadRequest(413, str(exc)) from None
    except ImageError as exc:
        raise BadRequest(422, str(exc)) from None


async def predictions(
    items: list[bytes | np.ndarray], p: Predictor, limits: Limits, coalescer: Coalescer
) -> list[Prediction]:
    budget = PixelBudget(limits.max_request_pixels)
    with image_errors():
        return await coalescer.run(p, lambda: p.prepare(items, limits.max_pixels, budget))


@router.post(
    "/api/predict",
    summary="Recognize one digit",
    response_model=None,
    responses={200: {"model": PredictionBody, "description": "The prediction"}, **ERRORS},
    openapi_extra=request_body(batch=False),
)
async def predict(
    request: Request, p: PredictorDep, limits: LimitsDep, coalescer: CoalescerDep, recent: RecentDep
) -> JSONResponse:
    """Send a multipart upload (field `file`), a raw image body (`image/png`,
    `image/jpeg`, ...), or JSON `{"image": "<base64 or data URL>"}` or
    `{"pixels": [784 values]}`."""
    started = time.perf_counter()
    items = await items_from(request, batch=False, limits=limits)
    [pred] = await predictions(items, p, limits, coalescer)
    pid = recent.remember(items[0], pred, p.sha256)
    # Our dicts are JSON already: a Response skips FastAPI's jsonable_encoder's second walk.
    return JSONResponse(answer(pred, p, started, pid))


@router.post(
    "/api/predict/batch",
    summary="Recognize many digits",
    response_model=None,
    responses={200: {"model": BatchBody, "description": "One per image"}, **ERRORS},
    openapi_extra=request_body(batch=True),
)
async def predict_batch(
    request: Request, p: PredictorDep, limits: LimitsDep, coalescer: CoalescerDep, recent: RecentDep
) -> JSONResponse:
    """Multipart (fields `files`) or JSON `{"images": [{"image": ...}, {"pixels": ...}]}`."""
    started = time.perf_counter()
    items = await items_from(request, batch=True, limits=limits)
    preds = await predictions(items, p, limits, coalescer)
    ids = [recent.remember(item, pr, p.sha256) for item, pr in zip(items, preds, strict=True)]
    answers = [answer(pr, p, started, pid) for pr, pid in zip(preds, ids, strict=True)]
    return JSONResponse({"predictions": answers})


@router.post(
    "/api/read",
    summary="Read a whole number",
    response_model=None,
    responses={200: {"model": ReadingBody, "description": "The reading"}, **ERRORS},
    openapi_extra=request_body(batch=False),
)
async def read_number(
    request: Request, p: PredictorDep, limits: LimitsDep, coalescer: CoalescerDep
) -> JSONResponse:
    """Every digit in the image, line by line: the same request forms and limits as
    `/api/predict`. The answer's `text` is the number; `digits` has each character's box
    in the image's pixels and its confidence."""
    started = time.perf_counter()
    [item] = await items_from(request, batch=False, limits=limits)
    budget = PixelBudget(limits.max_request_pixels)
    with image_errors():
        try:
            reading = await coalescer.call(lambda: read(p, item, limits.max_pixels, budget))
        except CheckpointError as exc:  # a companion model missing or damaged: the install's
            raise BadRequest(503, f"numbers cannot be read here: {exc}") from None
    return JSONResponse({
        **reading.to_dict(),
        "model": model_ref(p),
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    })  # fmt: skip


@router.post(
    "/api/feedback",
    summary="Correct an answer (or confirm it)",
    response_model=None,
    responses={
        200: {"model": FeedbackBody, "description": "The stored correction"},
        **ERRORS,
        404: error_doc("No recent answer with that prediction_id"),
    },
    openapi_extra=feedback_body(),
)
async def feedback(
    request: Request,
    p: PredictorDep,
    limits: LimitsDep,
    coalescer: CoalescerDep,
    recent: RecentDep,
    store: StoreDep,
) -> JSONResponse:
    """The digit an image really is (`label`, 0-9), for an answer this server gave
    (`prediction_id`, from `/api/predict`) or for an image sent as to `/api/predict`.
    Kept in the corrections store that `digitrec learn` learns from."""
    label, pid, item = await correction_from(request, limits)
    if item is None:
        seen = recent.get(pid or "")
        if seen is None:
            raise BadRequest(
                404,
                f"no recent answer {pid!r}: answers are remembered for "
                f"{KEEP_SECONDS / 60:g} minutes by the server process that "
                "gave them; send the image with the label",
            )
        original, pred, sha = seen.original, seen.prediction, seen.model_sha256
    else:
        [pred] = await predictions([item], p, limits, coalescer)
        original, sha = (item if isinstance(item, bytes) else None), p.sha256
    try:
        record = correction_of(pred, label, sha, "web", original)
    except FeedbackError as exc:
        raise BadRequest(422, str(exc)) from None
    try:
        record_id, new = await run_in_threadpool(store.add, record)
    except FeedbackError as exc:
        raise BadRequest(503, f"the correction cannot be stored now: {exc}") from None
    return JSONResponse({"id": record_id, "new": new, "label": label, "predicted": pred.digit})


@router.get("/api/model", summary="The loaded model", responses={503: ERRORS[503]})
async def model(p: PredictorDep) -> dict[str, Any]:
    meta = p.meta
    return {
        **model_ref(p),
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
        "temperature": p.temperature,
        "uncertain_below": p.uncertain_below,
        "calibrated": bool(meta.get("calibration")),
        "not_a_digit": {"detector": d.path.name if d.path else None, "threshold": d.threshold}
        if (d := p.not_digit_detector())
        else None,
    }


@router.get("/api/limits", summary="What the server accepts")
async def accepts(limits: LimitsDep) -> dict[str, Any]:
    """The formats and sizes every endpoint takes, in words the page shows as they are."""
    return {
        "formats": [f.name for f in FORMATS],
        "mime_types": [f.mime for f in FORMATS],
        "format_names": FORMAT_NAMES,
        "accepted": f"{FORMAT_NAMES}, up to {size_text(limits.max_body_bytes)}",
        "max_body_bytes": limits.max_body_bytes,
        "max_pixels": limits.max_pixels,
        "max_batch": limits.max_batch,
    }


@router.post(
    "/api/model/reload",
    summary="Serve the registry's active model now",
    responses={
        409: error_doc("This server serves a model it was started with"),
        503: error_doc("The new model cannot be loaded: the old one keeps serving"),
    },
)
async def reload_model(request: Request) -> dict[str, Any]:
    """For operators: load the model the resolution names now (the registry's active
    version) and swap it in without a failed request. A server polls the registry every
    few seconds anyway; this does it at once."""
    if not getattr(request.app.state, "follows", False):
        raise BadRequest(
            409,
            "this server serves the model it was started with (--model-path "
            "or DIGITREC_MODEL); restart it without one to follow the registry",
        )
    try:
        changed = await live.reload(request.app)
    except DigitrecError as exc:
        why = f"the new model cannot be loaded, the old one keeps serving: {exc}"
        raise BadRequest(503, why) from None
    return {"changed": changed, **await model(await current_predictor(request))}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: a prediction can be made now",
    responses={503: {"description": 'Not now: `{"ready": false, "reason": "..."}`'}},
)
async def readyz(request: Request, coalescer: CoalescerDep) -> JSONResponse:
    p = request.app.state.predictor
    if p is None:
        return JSONResponse({"ready": False, "reason": "loading the model"}, status_code=503)
    if not await coalescer.ready(p):
        reason = f"no prediction could be made within {READY_WITHIN:g} s: busy or stuck"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"))
