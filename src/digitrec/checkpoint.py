"""Checkpoints: safetensors for tensors, JSON for everything else. Never pickle.

A model checkpoint is one self-contained ``.safetensors`` file whose header
metadata holds a JSON record (model name, normalization, classes, metrics), so a
single file can be copied, shipped, or pointed at with ``--model-path``.

The resumable training state (optimizer, scheduler, RNG, position in the epoch)
is a nested structure of tensors and plain values; ``save_tree`` stores its
tensors as safetensors and the structure, with references to them, as JSON in
the same file's header.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from digitrec.errors import CheckpointError
from digitrec.files import atomic_path
from digitrec.models import LINE_MODEL, MODELS, Ensemble, LineModel, build_model
from digitrec.records import Number, Required, check

FORMAT = "digitrec-checkpoint"
ENSEMBLE = "ensemble"  # the model name of a checkpoint holding several models
FORMAT_VERSION = 1
HASH_KEY = "tensors_sha256"  # of the tensors' names, types, shapes and bytes

_NORMALIZATION = {"mean": Number, "std": Number}
# What digitrec reads of a checkpoint's record (the front ends show the rest as it is).
RECORD = {
    "format": Required(str),
    "model": Required(str),
    "classes": [str],
    "normalization": _NORMALIZATION,
    "members": [{"model": Required(str), "normalization": _NORMALIZATION}],
    HASH_KEY: str,
    "test_accuracy": Number,
    "metrics": {"val_acc": Number},
    "calibration": {"temperature": Required(Number), "uncertain_below": Required(Number)},
    "epoch": int,
    "params": int,
    "run": str,
    "recipe": str,
    "command": str,
    "created": str,
}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors themselves, stored in the header they are saved with: bytes
    flipped after a header passed safetensors' own checks and gave NaN predictions."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def verify_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any], what: str) -> None:
    """Refuse tensors that are not the ones saved (when the record has their hash: older
    checkpoints do not) or that hold NaN or infinite values."""
    damaged = f"{what} is damaged"
    if meta.get(HASH_KEY) and tensors_sha256(tensors) != meta[HASH_KEY]:
        raise CheckpointError(f"{damaged}: its weights do not match the hash saved with them")
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointError(f"{damaged}: NaN or infinite weights in {', '.join(bad[:3])}")


def save_model(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(path, tensors, meta)


def save_tensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    record = {"format": FORMAT, "version": FORMAT_VERSION, **meta}
    record[HASH_KEY] = tensors_sha256(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"digitrec": json.dumps(record)})


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON record of a checkpoint, reading only the header."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a .safetensors file or a run")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({exc}); "
            "it may be truncated or another kind of file"
        ) from None
    if "digitrec" not in header:
        raise CheckpointError(
            f"{path} has no digitrec metadata: it was not saved by digitrec "
            "(train one with `digitrec train`)"
        )
    try:
        meta = json.loads(header["digitrec"])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt digitrec metadata ({exc})") from None
    check(meta, RECORD, f"{path}'s digitrec metadata", CheckpointError)
    norms = [meta.get("normalization") or {}] + [
        m.get("normalization") or {} for m in meta.get("members") or []
    ]
    if any(n.get("std") is not None and n["std"] <= 0 for n in norms):
        raise CheckpointError(f"{path}'s digitrec metadata is damaged: normalization.std <= 0")
    if meta.get("calibration") and not meta["calibration"]["temperature"] > 0:
        raise CheckpointError(f"{path}'s digitrec metadata is damaged: temperature <= 0")
    names = (
        [m.get("model") for m in meta.get("members") or [{}]]
        if meta.get("model") == ENSEMBLE
        else [meta.get("model")]
    )
    unknown = [n for n in names if n not in MODELS and n != LINE_MODEL]
    if meta.get("format") != FORMAT or unknown:
        raise CheckpointError(
            f"{path}: metadata names model {(unknown or names)[0]!r}, which this version of "
            f"digitrec does not know (known: {', '.join([*MODELS, LINE_MODEL])})"
        )
    return meta


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The untrained architecture a checkpoint's record describes (an ensemble: each member's)."""
    num_classes = len(meta.get("classes", range(10)))

    def one(record: dict[str, Any]) -> nn.Module:
        norm = record.get("normalization", {})
        if record["model"] == LINE_MODEL:
            return LineModel(num_classes, norm.get("mean", 0.1307), norm.get("std", 0.3081))
        return build_model(
            record["model"], num_classes, norm.get("mean", 0.1307), norm.get("std", 0.3081)
        )

    if meta["model"] == ENSEMBLE:
        return Ensemble([one({**meta, **m}) for m in meta["members"]])
    return one(meta)


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the architecture the metadata names and load the weights into it, in eval mode."""
    meta = read_meta(path)
    model = build_from_meta(meta)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from None
    verify_tensors(state, meta, str(path))
    load_state(model, state, f"{path} (model {meta['model']!r})")
    return model.to(device).eval(), meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a message that says exactly what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:3]))
        raise CheckpointError(
            f"{what} does not match the architecture: {', '.join(parts)}. "
            "Was it saved from a different model?"
        )
    model.load_state_dict(state)


# ------------------------------------------------------------ nested state trees


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store dict keys of {prefix}")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} without pickle")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_tree(path: str | os.PathLike[str], tree: Any) -> None:
    """Write a nested structure as one safetensors file: tensors as tensors, the
    structure as JSON in the header. One file, so one atomic rename."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(tree, "", tensors)
    header = {"tree": json.dumps(structure), HASH_KEY: tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_tree(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No resumable training state at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            structure = json.loads(header["tree"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if header.get(HASH_KEY) and tensors_sha256(tensors) != header[HASH_KEY]:
            raise CheckpointError(f"Training state {path} is damaged: its tensors do not match")
        return _unflatten(structure, tensors)
    except (
        json.JSONDecodeError,
        SafetensorError,
        OSError,
        LookupError,
        TypeError,
        ValueError,
    ) as exc:
        raise CheckpointError(f"Training state {path} is corrupt ({exc})") from None


def copy_with_meta(src: str | os.PathLike[str], dst: str | os.PathLike[str], extra: dict) -> None:
    """Copy a checkpoint, adding to its metadata (how the shipped model records its origin)."""
    meta = read_meta(src)
    tensors = load_file(str(src))
    verify_tensors(tensors, meta, str(src))
    save_tensors(dst, tensors, {**meta, **extra})
