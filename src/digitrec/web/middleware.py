"""ASGI middleware of the app."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("digitrec.web")


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
