"""The one way to turn images into predictions, shared by the CLI, the GUI and the server.

``Predictor.load()`` resolves a model once (``runs.resolve_model_path`` says in which
order) and loads it. ``predict()`` runs the preprocessing pipeline and the model on a
batch.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec import registry
from digitrec.augment import tta_matrices, tta_probabilities
from digitrec.calibration import UNCERTAIN_BELOW
from digitrec.checkpoint import load_model
from digitrec.data import get_spec
from digitrec.errors import CheckpointError, DigitrecError
from digitrec.export import OnnxModel, onnx_path_for, sha256
from digitrec.models import LineModel, inference_module, resolve_device
from digitrec.notdigit import NotDigit
from digitrec.preprocess import ImageLike, PixelBudget, Preprocessed, preprocess
from digitrec.runs import companion_or_shipped, reading_model_path, resolve_model_path

BACKENDS = ("auto", "torch", "onnx", "int8")
DIGITS = list(get_spec("mnist").classes)
# Images (or test-time views) per model call: larger ones gain little per image and cost
# memory (docs/results.md#measured).
MAX_BATCH = 1024


def _chunks(x: Any, step: int) -> list[Any]:
    """``x`` (a tensor or an array) cut into batches of at most ``step`` images."""
    return [x[i : i + step] for i in range(0, len(x), step)]


def export_of(
    checkpoint: Path, required: bool, int8: bool = False, spin: bool = True
) -> OnnxModel | None:
    """The ONNX Runtime model exported from exactly this checkpoint (beside it, with its
    SHA-256 in the metadata), or its int8 copy. None if there is none and it is not
    ``required``."""
    onnx = onnx_path_for(checkpoint, int8)
    try:
        if not onnx.is_file():
            how = f"digitrec export {checkpoint}" + (" --quantize int8" if int8 else "")
            raise CheckpointError(
                f"No {'int8 ' * int8}ONNX export of {checkpoint} (looked for {onnx}): run `{how}`"
            )
        runtime = OnnxModel(onnx, spin=spin)
        if runtime.meta.get("checkpoint_sha256") != sha256(checkpoint):
            raise CheckpointError(
                f"{onnx} was exported from another version of {checkpoint.name}: "
                f"export it again (`digitrec export {checkpoint}`)"
            )
        return runtime
    except DigitrecError:
        if required:
            raise
        return None


@dataclass
class Prediction:
    digit: int | None  # None when no digit was found
    label: str
    confidence: float
    probabilities: list[float]
    uncertain: bool
    blank: bool
    image: np.ndarray  # the 28x28 input the model saw
    info: dict[str, Any] = field(default_factory=dict)
    not_a_digit: bool = False  # the "not a digit" detector's verdict: then no digit

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(i), float(self.probabilities[i])) for i in order]

    def candidates(self, classes: Sequence[str]) -> str:
        """The two likeliest answers, for a "not sure": '4 (55%) or 9 (40%)'."""
        (a, pa), (b, pb) = self.top(2)
        return f"{classes[a]} ({pa:.0%}) or {classes[b]} ({pb:.0%})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "digit": self.digit,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities],
            "uncertain": self.uncertain,
            "blank": self.blank,
            "not_a_digit": self.not_a_digit,
            "preprocessing": self.info,
        }


class Predictor:
    """A loaded model plus the preprocessing pipeline. Safe to share between threads."""

    def __init__(
        self,
        model: nn.Module | OnnxModel,
        meta: dict[str, Any],
        source: str = "",
        path: Path | None = None,
        uncertain_below: float | None = None,
        not_digit: bool = True,
    ) -> None:
        if isinstance(model, OnnxModel):
            int8 = model.meta.get("precision") == "int8"
            self.model, self.backend = None, "onnx int8" if int8 else "onnx"
            self.device = torch.device("cpu")
            self._run: Any = model
        else:
            self.model, self.backend = model.eval(), "torch"
            self.device = next(model.parameters()).device
            self._run = inference_module(self.model)
        self.meta = meta
        self.source = source
        self.path = path
        self.classes: list[str] = list(meta.get("classes", DIGITS))
        # The model's own calibration (``digitrec calibrate``); uncalibrated: T = 1.
        calibration = meta.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        self.uncertain_below = (
            uncertain_below
            if uncertain_below is not None
            else float(calibration.get("uncertain_below", UNCERTAIN_BELOW))
        )
        self._lock = threading.Lock()
        self._tta = tta_matrices()
        self._reader: Predictor | None = None
        self._lines: LineModel | None = None
        # None: not loaded yet; False: none for this model (or ``not_digit=False``).
        self._notdigit: NotDigit | bool | None = None if not_digit else False
        self._reader_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_path: str | os.PathLike[str] | None = None,
        runs_dir: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        spin: bool = True,
        **kwargs: Any,
    ) -> Predictor:
        """Resolve and load a model once. ``backend``: ``torch``, ``onnx`` (ONNX Runtime,
        from an exported ``.onnx`` file, given or found beside the checkpoint), ``int8``
        (its int8 copy, ``NAME.int8.onnx``: a third of the time per image in batches, for
        servers) or ``auto`` (ONNX Runtime when a float export of exactly this checkpoint
        exists and the device is the CPU, else PyTorch). ``spin``: whether ONNX Runtime's
        threads wait busy after a run (faster for a model called alone)."""
        if backend not in BACKENDS:
            raise CheckpointError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
        path, source = resolve_model_path(model_path, runs_dir)
        if path.suffix == ".onnx":
            if backend == "torch":
                raise CheckpointError(f"{path} is an ONNX model: use --backend onnx or auto")
            runtime: OnnxModel | None = OnnxModel(path, spin=spin)
            if backend == "int8" and runtime.meta.get("precision") != "int8":
                raise CheckpointError(
                    f"{path} is a float32 ONNX model: give its .int8.onnx copy for --backend int8"
                )
        elif backend in ("onnx", "int8") or (backend == "auto" and device == "cpu"):
            runtime = export_of(path, backend != "auto", backend == "int8", spin)
        else:
            runtime = None
        if runtime is None:
            model, meta = load_model(path, resolve_device(device))
            predictor = cls(model, meta, source=source, path=path, **kwargs)
        else:
            predictor = cls(runtime, runtime.meta, source=source, path=runtime.path, **kwargs)
        predictor.not_digit_detector()  # a damaged one fails here, clearly, not per request
        return predictor

    def reading_model(self) -> Predictor:
        """The model that reads whole numbers (``digitrec.reading``): this one's reading
        model, ``NAME.reader.safetensors`` beside it, when there is one (loaded once, from
        its ONNX export when there is one), else this model itself."""
        with self._reader_lock:
            if self._reader is None:
                companion = reading_model_path(self.path) if self.path else None
                # Called in turn with this model: its threads must not wait busy.
                self._reader = (
                    Predictor.load(companion, spin=False)
                    if companion is not None and companion.is_file()
                    else self
                )
            return self._reader

    def line_model(self) -> LineModel:
        """The model that reads a line of touching digits (``digitrec.reading``):
        ``NAME.lines.safetensors`` beside this model when there is one, else the shipped
        one (it reads digits whatever the digit model). Loaded once, run by PyTorch."""
        with self._reader_lock:
            if self._lines is None:
                path = companion_or_shipped(self.path, "lines")
                model, _ = load_model(path, self.device)
                if not isinstance(model, LineModel):
                    raise CheckpointError(f"{path} is not a line model (`digitrec train-lines`)")
                self._lines = model
            return self._lines

    def not_digit_detector(self) -> NotDigit | None:
        """The "not a digit" detector (``digitrec.notdigit``) for a model that reads
        MNIST's digits: ``NAME.notdigit.safetensors`` beside it, else the shipped one;
        None for other models (Fashion-MNIST's, a reading model) or when there is none.
        Loaded once, run by PyTorch on this model's device."""
        with self._reader_lock:
            if self._notdigit is None:
                path = companion_or_shipped(self.path, "notdigit")
                usable = self.classes == DIGITS and path.is_file()
                self._notdigit = NotDigit.load(path, self.device) if usable else False
            return self._notdigit or None

    @property
    def name(self) -> str:
        return str(self.meta.get("model", "?"))

    @functools.cached_property
    def registry_version(self) -> int | None:
        """Its number in the model registry (0: the shipped model), if it has one."""
        return registry.version_of(self.path)

    @functools.cached_property
    def sha256(self) -> str:
        """The model's id: the SHA-256 of its checkpoint (for an ONNX export, of the
        checkpoint it was exported from, which its metadata records)."""
        return str(self.meta.get("checkpoint_sha256") or (sha256(self.path) if self.path else ""))

    def probabilities(self, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities for a (N, 1, 28, 28) float batch already in model form.

        With ``tta``, the mean over a few shifted and rotated views of each image. The
        model sees at most ``MAX_BATCH`` images (views) per call, whatever N is: in one
        call, 10,000 test images with their seven views asked ONNX Runtime for a 7 GB
        buffer and `best`'s activations grew past 19 GB.
        """
        x = x.to(self.device)
        step = max(1, MAX_BATCH // len(self._tta)) if tta else MAX_BATCH
        with self._lock, torch.inference_mode():
            parts = [
                tta_probabilities(self._logits, part, self._tta)
                if tta
                else torch.softmax(self._logits(part), dim=1)
                for part in _chunks(x, step)
            ]
        return torch.cat(parts).cpu() if parts else torch.empty(0, len(self.classes))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated logits: the model's divided by its temperature."""
        return self._run(x).float() / self.temperature

    def _probabilities(self, x: np.ndarray, tta: bool) -> np.ndarray:
        """``probabilities`` of a numpy batch, as numpy. On ONNX Runtime without views it
        never touches torch: the round trip cost a lone drawing a tenth of its time."""
        if tta or not isinstance(self._run, OnnxModel):
            return self.probabilities(torch.from_numpy(x), tta=tta).numpy()
        with self._lock:
            logits = [self._run.run(part) for part in _chunks(x, MAX_BATCH)]
        z = np.concatenate(logits).astype(np.float32, copy=False) / np.float32(self.temperature)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def classify(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities of (N, 28, 28) model inputs (``Preprocessed.image``s)."""
        probs = self._probabilities(images[:, None].astype(np.float32, copy=False), tta)
        if not np.isfinite(probs).all():  # never a NaN answer, in JSON or anywhere
            raise CheckpointError(
                f"{self.path}: the model gave NaN or infinite outputs; its weights are "
                "damaged (load another model or export this one again)"
            )
        return probs

    def predict(
        self, images: Sequence[ImageLike], tta: bool = False, max_pixels: int | None = None
    ) -> list[Prediction]:
        """Preprocess and classify a batch; raises ImageError for an undecodable image."""
        return self.predict_preprocessed(self.prepare(images, max_pixels), tta=tta)

    @staticmethod
    def prepare(
        images: Sequence[ImageLike],
        max_pixels: int | None = None,
        budget: PixelBudget | None = None,
    ) -> list[Preprocessed]:
        """The pipeline's half of ``predict``, for callers that run the model half on
        many requests' images at once (the server); ``budget``: the pixels all of
        ``images`` may decode to together."""
        return [preprocess(img, max_pixels=max_pixels, budget=budget) for img in images]

    def predict_one(
        self, image: ImageLike, tta: bool = False, max_pixels: int | None = None
    ) -> Prediction:
        return self.predict([image], tta=tta, max_pixels=max_pixels)[0]

    def predict_preprocessed(
        self, pre: Sequence[Preprocessed], tta: bool = False
    ) -> list[Prediction]:
        out: list[Prediction] = [None] * len(pre)  # type: ignore[list-item]
        todo = [i for i, p in enumerate(pre) if not p.blank]
        if todo:
            images = np.stack([pre[i].image for i in todo])
            probs = self.classify(images, tta)
            detector = self.not_digit_detector()
            junk = detector.flags(images) if detector else np.zeros(len(todo), bool)
            for i, p, no in zip(todo, probs, junk, strict=True):
                d = int(p.argmax())
                out[i] = Prediction(
                    digit=None if no else d,
                    label="" if no else self.classes[d],
                    confidence=float(p[d]),
                    probabilities=[float(v) for v in p],
                    uncertain=bool(no) or float(p[d]) < self.uncertain_below,
                    blank=False,
                    image=pre[i].image,
                    info=pre[i].info(),
                    not_a_digit=bool(no),
                )
        for i, p in enumerate(pre):
            if p.blank:
                out[i] = Prediction(
                    digit=None,
                    label="",
                    confidence=0.0,
                    probabilities=[0.0] * len(self.classes),
                    uncertain=True,
                    blank=True,
                    image=p.image,
                    info=p.info(),
                )
        return out
