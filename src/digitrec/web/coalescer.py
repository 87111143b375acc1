"""One model call for every request waiting, and the readiness probe that goes the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
from starlette.concurrency import run_in_threadpool

from digitrec.predictor import Prediction, Predictor
from digitrec.preprocess import Preprocessed
from digitrec.web.settings import READY_WITHIN


class Coalescer:
    """Runs the model once for every request waiting, rather than once per request.

    Requests preprocess their images in worker threads, then queue them here. While the
    model works on one batch (or on a request that found it idle), the next requests
    queue up and go in the next call together: no added wait for a lone request, and
    under load the model sees batches, where it costs a fraction per image of what it
    costs one image at a time. ``busy`` is only touched on the event loop, so there is
    no lock.

    Preprocessing runs in at most ``threads`` threads at once (one per core the process
    has to itself): it is mostly Python holding the GIL, and more threads only spend CPU
    handing it around (docs/benchmarks.md#serving-benchmarksserve_loadpy). Requests
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
            return await self.predict(p, await self.call(prepare))
        self.busy = True
        try:
            preds = await self.call(lambda: p.predict_preprocessed(prepare()))
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

    async def call(self, fn: Callable[[], Any]) -> Any:
        """``fn`` in one of the preprocessing threads (also the whole of reading a number:
        the pipeline and the model in turn, too many model calls for the queue to gather)."""
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
