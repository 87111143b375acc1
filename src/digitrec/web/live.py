"""The server's model, swapped while it serves: a server whose model was not pinned (by
``--model-path`` or ``$DIGITREC_MODEL``) follows the registry's active version, polling
its pointer every ``POLL_SECONDS`` (one ``stat``); ``POST /api/model/reload`` asks now.
The new model is loaded beside the old one, in a thread, and swapped in at once: a
request holds the predictor it started with to its end (``routes.current_predictor``),
so none fails and each answer names the model that made it. A model that cannot be
loaded leaves the old one serving, and the reason is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from digitrec import registry
from digitrec.errors import DigitrecError
from digitrec.predictor import Predictor
from digitrec.runs import resolve_model_path
from digitrec.web.settings import BACKEND_ENV

POLL_SECONDS = 2.0
log = logging.getLogger("digitrec.serve")


def _load_if_new(current: Predictor) -> Predictor | None:
    """The model the resolution names now, loaded, or None when it is the one serving."""
    path, source = resolve_model_path()
    if current.path is not None and path.resolve() == _checkpoint(current).resolve():
        return None
    p = Predictor.load(path, backend=os.environ.get(BACKEND_ENV, "auto"))
    p.source = source
    p.sha256  # noqa: B018  (hashed here, in the thread, not by the first answer)
    return p


def _checkpoint(p: Predictor):
    """The checkpoint a predictor came from (an ONNX Runtime one: the file it was exported
    from lies beside its export, ``NAME.safetensors`` for ``NAME.onnx``)."""
    assert p.path is not None
    if p.path.suffix == ".onnx":
        return p.path.with_name(p.path.name.removesuffix(".int8.onnx").removesuffix(".onnx")
                                + ".safetensors")  # fmt: skip
    return p.path


async def reload(app: FastAPI) -> bool:
    """Load the model the resolution names now and swap it in; whether it changed.
    Raises DigitrecError when it cannot be loaded (the old one keeps serving)."""
    async with app.state.swap_lock:
        new = await run_in_threadpool(_load_if_new, app.state.predictor)
        if new is None:
            return False
        old, app.state.predictor = app.state.predictor, new
        log.warning("digitrec: now serving %s (%s), was %s", new.path, new.source, old.path)
        return True


async def follow(app: FastAPI) -> None:
    """Poll the registry's pointer; reload when it moves."""
    seen = registry.pointer_stamp()
    while True:
        await asyncio.sleep(POLL_SECONDS)
        stamp = registry.pointer_stamp()
        if stamp == seen:
            continue
        seen = stamp
        try:
            await reload(app)
        except DigitrecError as exc:
            log.warning("digitrec: the registry's new model cannot be served: %s", exc)
