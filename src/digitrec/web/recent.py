"""The server's memory of its recent answers: a correction names one by its
``prediction_id`` instead of uploading the image again. Kept per server process, for
``KEEP_SECONDS``, within ``KEEP_BYTES`` of images (the oldest forgotten first)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from digitrec.predictor import Prediction

KEEP_SECONDS = 600.0
KEEP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    original: bytes | None  # the image as sent (None: it came as pixels)
    prediction: Prediction
    model_sha256: str
    at: float

    @property
    def size(self) -> int:
        return len(self.original or b"") + self.prediction.image.nbytes


class Recent:
    def __init__(self, seconds: float = KEEP_SECONDS, max_bytes: int = KEEP_BYTES) -> None:
        self.seconds, self.max_bytes = seconds, max_bytes
        self._answers: OrderedDict[str, Answer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, item: bytes | np.ndarray, pred: Prediction, model_sha256: str) -> str:
        original = bytes(item) if isinstance(item, (bytes, bytearray)) else None
        answer = Answer(original, pred, model_sha256, time.monotonic())
        key = uuid.uuid4().hex
        with self._lock:
            self._answers[key] = answer
            self._bytes += answer.size
            self._forget(answer.at)
        return key

    def get(self, key: str) -> Answer | None:
        with self._lock:
            self._forget(time.monotonic())
            return self._answers.get(key)

    def _forget(self, now: float) -> None:
        while self._answers:
            oldest = next(iter(self._answers.values()))
            if now - oldest.at <= self.seconds and self._bytes <= self.max_bytes:
                return
            self._bytes -= self._answers.popitem(last=False)[1].size
