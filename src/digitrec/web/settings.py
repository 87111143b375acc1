"""The server's settings, one source for `digitrec serve` and the app: limits (from the
environment, checked once), the environment that carries the CLI's choices to uvicorn's
workers, and the bounds on readiness and shutdown."""

from __future__ import annotations

import os
from dataclasses import dataclass

from digitrec.errors import DigitrecError
from digitrec.preprocess import MAX_IMAGE_BYTES, MAX_PIXELS

SOURCE_ENV = "DIGITREC_MODEL_SOURCE"
BACKEND_ENV = "DIGITREC_BACKEND"
THREADS_ENV = "DIGITREC_THREADS"  # preprocessing threads per process (set by `serve`)
READY_WITHIN = 2.0  # seconds: a worker whose probe prediction takes longer is not ready
SHUTDOWN_SECONDS = 5  # graceful shutdown's bound: requests take milliseconds, a stuck one forever


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_PIXELS  # one image
    max_request_pixels: int = 2 * MAX_PIXELS  # all of a request's images, decoded
    max_batch: int = 256


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
