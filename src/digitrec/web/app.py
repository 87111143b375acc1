"""FastAPI server: the drawing page at ``/`` and a JSON API under ``/api``.

The Predictor is loaded once at start-up and shared; inference runs in the thread
pool so the event loop keeps serving. Every input error is a 4xx with a JSON
``detail`` saying what to fix: 413 for bodies and images over the limits, 415 for a
content type we do not read, 422 for data that is not a usable image.

The app is assembled here from its parts: ``routes`` (the endpoints, which get what
they need as dependencies), ``bodies`` (request bodies to images), ``coalescer`` (one
model call for the requests waiting), ``middleware`` (unexpected errors), ``settings``
and ``server`` (`digitrec serve`).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

import digitrec
from digitrec.feedback import FeedbackStore
from digitrec.predictor import Predictor
from digitrec.runs import pinned
from digitrec.web.coalescer import Coalescer
from digitrec.web.live import follow
from digitrec.web.middleware import ErrorsAnsweredAsJSON
from digitrec.web.recent import Recent
from digitrec.web.routes import STATIC, router
from digitrec.web.settings import (
    BACKEND_ENV,
    SOURCE_ENV,
    THREADS_ENV,
    Limits,
    cores,
    env_int,
    limits_from_env,
)


def create_app(
    predictor: Predictor | None = None,
    model_path: str | None = None,
    limits: Limits | None = None,
    feedback_url: str | None = None,
) -> FastAPI:
    """The app. Without a predictor it loads one at start-up by the usual resolution order;
    corrections go to ``feedback_url`` (default: ``digitrec.feedback``'s resolution)."""
    limits = limits or limits_from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One request is a batch of one: intra-op threads only contend with each other
        # and with the preprocessing of concurrent requests. Parallelism comes from
        # requests (the thread pool) and from --workers.
        torch.set_num_threads(1)
        # A model named by the caller stays; one the resolution chose follows the registry.
        app.state.follows = app.state.predictor is None and not (model_path or pinned())
        if app.state.predictor is None:
            p = Predictor.load(model_path, backend=os.environ.get(BACKEND_ENV, "auto"))
            # `digitrec serve` resolved a pinned model before starting workers: from where.
            p.source = os.environ.get(SOURCE_ENV, p.source)
            app.state.predictor = p
        app.state.predictor.sha256  # read once here, not by the first answer  # noqa: B018
        app.state.swap_lock = asyncio.Lock()
        watcher = asyncio.create_task(follow(app)) if app.state.follows else None
        yield
        if watcher is not None:
            watcher.cancel()

    # FastAPI's own /docs loads Swagger UI from a CDN: a blank page offline.
    app = FastAPIOffline(
        title="digitrec",
        version=digitrec.__version__,
        description="Handwritten digit recognition. Draw at `/`, or POST images to `/api/predict`.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.limits = limits
    app.state.coalescer = Coalescer(limits.max_batch, threads=env_int(THREADS_ENV, cores()))
    app.state.recent = Recent()
    app.state.feedback = FeedbackStore(feedback_url)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(ErrorsAnsweredAsJSON)
    return app
