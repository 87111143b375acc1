"""`digitrec serve`: the model resolved and the settings checked before uvicorn starts,
then uvicorn with digitrec's HTTP protocol, its workers and a bounded shutdown."""

from __future__ import annotations

import asyncio
import os
import socket

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from digitrec.errors import DigitrecError
from digitrec.feedback import FEEDBACK_URL_ENV, FeedbackStore
from digitrec.predictor import Predictor
from digitrec.runs import MODEL_ENV, choose_model, pinned
from digitrec.web.settings import (
    BACKEND_ENV,
    SHUTDOWN_SECONDS,
    SOURCE_ENV,
    THREADS_ENV,
    cores,
    limits_from_env,
)


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
    host: str,
    port: int,
    model_path: str | None,
    workers: int,
    backend: str = "auto",
    feedback_url: str | None = None,
) -> None:
    """`digitrec serve`: resolve the model here (so a bad path fails before the server
    starts), then run uvicorn; several workers each load it once."""
    if workers < 1:
        raise DigitrecError(f"--workers {workers}: give 1 or more (one per core serves most)")
    limits_from_env()  # a bad limit fails here, once, not in every worker
    choice = choose_model(model_path)
    path = choice.path
    p = Predictor.load(path, backend=backend)  # fail now, clearly, not in every worker
    if model_path or pinned():  # else each worker resolves it and follows the registry
        os.environ[MODEL_ENV] = str(path)
        os.environ[SOURCE_ENV] = choice.source
    os.environ[BACKEND_ENV] = backend
    os.environ[FEEDBACK_URL_ENV] = FeedbackStore(feedback_url).url  # a bad one fails here
    os.environ[THREADS_ENV] = str(max(1, cores() // workers))  # a core each
    check_port(host, port)
    print(f"digitrec: open http://{host}:{port}/\n  model {path} ({p.backend}): {choice.why}",
          flush=True)  # fmt: skip
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
