"""ONNX export, parity check and int8 quantization, and the ONNX Runtime model.

``digitrec export`` writes the checkpoint's model as ONNX with a dynamic batch axis and
its digitrec record (model, normalization, classes, accuracy, the checkpoint's SHA-256)
in the model's metadata, checks on the real MNIST test set that ONNX Runtime gives the
same answers as PyTorch before the file is renamed into place, and optionally writes a
statically quantized int8 copy calibrated on training images. ``OnnxModel`` runs such a
file and is called like the PyTorch model, so the Predictor uses either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digitrec.checkpoint import RECORD, load_model
from digitrec.data import load_dataset, split_indices, to_float
from digitrec.errors import CheckpointError, DigitrecError
from digitrec.files import atomic_path
from digitrec.records import check, now
from digitrec.runs import resolve_checkpoint

META_KEY = "digitrec"
CONTENT_KEY = "content_sha256"  # of the file less its metadata, where this is kept
# An export's record: a checkpoint's, less the format line, plus where it came from.
ONNX_RECORD = {
    **RECORD,
    "format": str,
    "precision": str,
    "checkpoint_sha256": str,
    CONTENT_KEY: str,
}
OPSET = 17
PARITY_AGREEMENT = 0.9999  # identical predicted digits on at least this share of images
PARITY_TOLERANCE = 1e-4  # and probabilities within this, for float32
INT8_MAX_LOSS = 0.001  # int8 may lose at most 0.1 points of test accuracy


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("a truncated varint")
        value |= (data[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not data[i - 1] & 0x80:
            return value, i


def onnx_content_sha256(data: bytes) -> str:
    """SHA-256 of a serialized ONNX model less its metadata_props (field 14 of the
    ModelProto, where this hash is kept), read field by field without the onnx package
    (importing it cost a lone `digitrec predict` 0.7 s)."""
    h, i = hashlib.sha256(), 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            i = _varint(data, i)[1]
        elif wire == 2:
            size, i = _varint(data, i)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} at byte {start}")
        if i > len(data):
            raise ValueError("truncated")
        if key >> 3 != 14:
            h.update(data[start:i])
    return h.hexdigest()


def onnx_path_for(checkpoint: Path, int8: bool = False) -> Path:
    """Where an export goes by default, and where the Predictor looks for one: beside
    the checkpoint, same name."""
    return checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise DigitrecError(
            "ONNX Runtime is not installed: pip install onnxruntime (it comes with digitrec's "
            "own dependencies; is this the project's environment?)"
        ) from None
    return onnxruntime


class OnnxModel:
    """An exported model on ONNX Runtime, called like the PyTorch model: a (N, 1, 28, 28)
    float tensor in, logits out."""

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True) -> None:
        ort = _runtime()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"No ONNX model at {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        if not spin:  # threads that wait busy after a run steal the cores of another session's
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own types for every kind of bad file
            raise CheckpointError(
                f"{self.path} is not a readable ONNX model ({str(exc).splitlines()[0]})"
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise CheckpointError(
                f"{self.path} has no digitrec metadata: export it with `digitrec export`"
            )
        try:
            meta = json.loads(props[META_KEY])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"{self.path}: corrupt digitrec metadata ({exc})") from None
        where = f"{self.path}'s digitrec metadata"
        self.meta: dict[str, Any] = check(meta, ONNX_RECORD, where, CheckpointError)
        self._verify()
        self.input = self.session.get_inputs()[0].name

    def _verify(self) -> None:
        """Refuse a file whose content is not what was exported (exports from before the
        hash was recorded are taken as they are)."""
        if not self.meta.get(CONTENT_KEY):
            return
        try:
            ok = onnx_content_sha256(self.path.read_bytes()) == self.meta[CONTENT_KEY]
        except ValueError:
            ok = False
        if not ok:
            raise CheckpointError(
                f"{self.path} is damaged: its content does not match the hash saved with it "
                "(export it again with `digitrec export`)"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().cpu().numpy()))

    def run(self, a: np.ndarray) -> np.ndarray:
        """Logits for a (N, 1, 28, 28) float array, without torch."""
        return self.session.run(None, {self.input: a.astype(np.float32, copy=False)})[0]


def _to_onnx(model: torch.nn.Module, record: dict[str, Any], dest: Path) -> None:
    import onnx

    dummy = torch.zeros(1, 1, 28, 28)
    # The TorchScript-based exporter: our models are plain nn.Sequential stacks, which it
    # exports exactly (the parity check proves it each time), without the onnxscript
    # dependency the newer torch.export-based one brings. torch is pinned.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(dest), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
    _set_meta(dest, record, onnx)


def _set_meta(path: Path, record: dict[str, Any], onnx: Any) -> None:
    """The record into the model's metadata, with the hash of everything else."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    proto.doc_string = f"digitrec {record.get('model')} ({record.get('precision')})"
    record = {**record, CONTENT_KEY: onnx_content_sha256(proto.SerializeToString())}
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(record)
    onnx.save(proto, str(path))
    if onnx_content_sha256(path.read_bytes()) != record[CONTENT_KEY]:
        raise DigitrecError(f"{path}: the saved model is not the one hashed; nothing written")


@dataclass
class Scored:
    name: str
    path: Path | None
    accuracy: float
    agreement: float | None = None  # share of images with PyTorch's predicted digit
    max_diff: float | None = None  # largest probability difference to PyTorch

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path else 0


def _probs(run, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    with torch.inference_mode():
        out = [torch.softmax(run(images[i : i + batch]), 1) for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def export(
    checkpoint: str | Path,
    out: str | Path | None = None,
    quantize: str | None = None,
    check: bool = True,
    data_dir: str | None = None,
) -> list[Scored]:
    """Export, check parity (unless ``check`` is False) and optionally quantize; returns
    what was measured. Files are renamed into place only after they pass."""
    ckpt = resolve_checkpoint(checkpoint)
    model, meta = load_model(ckpt)
    out = Path(out) if out else onnx_path_for(ckpt)
    if out.suffix != ".onnx":
        raise DigitrecError(f"-o {out}: give a path ending in .onnx")
    record = {
        k: meta.get(k)
        for k in ("model", "dataset", "classes", "normalization", "metrics", "test_accuracy",
                  "epoch", "run", "recipe", "command", "calibration")
        if meta.get(k) is not None
    }  # fmt: skip
    record.update(
        checkpoint=ckpt.name, checkpoint_sha256=sha256(ckpt), precision="float32",
        exported=now(),
        params=sum(p.numel() for p in model.parameters()),
    )  # fmt: skip
    if quantize not in (None, "int8"):
        raise DigitrecError(f"--quantize {quantize}: only int8 is supported")

    scored: list[Scored] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_float = Path(tmp) / "model.onnx"
        _to_onnx(model, record, tmp_float)
        if check or quantize:  # the test set, or the int8 model's calibration images
            ds = load_dataset(meta.get("dataset", "mnist"), data_dir)
        if check:
            images = to_float(ds.test_images)
            labels = ds.test_labels.numpy()
            ref = _probs(model, images)
            scored.append(Scored("pytorch", ckpt, float((ref.argmax(1) == labels).mean())))
            onnx_probs = _probs(OnnxModel(tmp_float), images)
            scored.append(_compare("onnx float32", out, onnx_probs, ref, labels))
            f32 = scored[-1]
            if f32.agreement < PARITY_AGREEMENT or f32.max_diff > PARITY_TOLERANCE:
                raise DigitrecError(
                    f"ONNX export does not match PyTorch: same digit on {f32.agreement:.4%} of "
                    f"the test set, probabilities within {f32.max_diff:.2e} (need "
                    f"{PARITY_AGREEMENT:.2%} and {PARITY_TOLERANCE:.0e}); nothing written"
                )
        else:
            scored.append(Scored("onnx float32", out, float("nan")))
        _move(tmp_float, out)
        if quantize:
            train_idx, _ = split_indices(len(ds.train_images), 5000, seed=0)
            calib = to_float(ds.train_images[train_idx[:1000]]).numpy()
            tmp_int8 = Path(tmp) / "model.int8.onnx"
            _quantize(out, tmp_int8, calib, {**record, "precision": "int8"})
            int8_out = out.with_name(out.stem + ".int8.onnx")
            if check:  # the int8 model may lose at most INT8_MAX_LOSS of test accuracy
                q = _compare("onnx int8", int8_out, _probs(OnnxModel(tmp_int8), images), ref,
                             labels)  # fmt: skip
                if scored[0].accuracy - q.accuracy > INT8_MAX_LOSS:
                    raise DigitrecError(
                        f"int8 quantization loses {100 * (scored[0].accuracy - q.accuracy):.2f} "
                        f"points of test accuracy (limit {100 * INT8_MAX_LOSS:.1f}); the float32 "
                        f"model is at {out}, no int8 file written"
                    )
            else:
                q = Scored("onnx int8", int8_out, float("nan"))
            _move(tmp_int8, int8_out)
            scored.append(q)
    return scored


def _compare(name: str, path: Path | None, probs: np.ndarray, ref: np.ndarray, labels) -> Scored:
    return Scored(
        name, path, accuracy=float((probs.argmax(1) == labels).mean()),
        agreement=float((probs.argmax(1) == ref.argmax(1)).mean()),
        max_diff=float(np.abs(probs - ref).max()),
    )  # fmt: skip


def _move(src: Path, dest: Path) -> None:
    try:
        with atomic_path(dest) as tmp:
            tmp.write_bytes(src.read_bytes())
    except OSError as exc:
        raise DigitrecError(f"Cannot write {dest}: {exc.strerror or exc}") from None


class _PerTensorFallback(logging.Filter):
    """onnxruntime warns, on the root logger, for each weight of rank 1 (a batch norm left
    after pooling, in `fast`) that it quantizes per tensor rather than per channel: as
    intended, and only noise to someone exporting a model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


def _quantize(src: Path, dest: Path, calib: np.ndarray, record: dict[str, Any]) -> None:
    """Static int8 (QDQ, per-channel weights), activations calibrated on training images.

    The first convolution stays in float: it has one input channel, so it costs little,
    and rounding its output cost `fast` most of its int8 loss (docs/results.md#measured).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib[i : i + 100] for i in range(0, len(calib), 100))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {"image": b}

    pre = dest.with_name("pre.onnx")
    quant_pre_process(str(src), str(pre))
    first_conv = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"][:1]
    quiet = _PerTensorFallback()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_static(
            str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=first_conv,
        )  # fmt: skip
    finally:
        logging.getLogger().removeFilter(quiet)
    _set_meta(dest, record, onnx)
