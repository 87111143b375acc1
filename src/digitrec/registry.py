"""The model registry: the models promoted by ``digitrec learn``, numbered, with the one
that is active and a log of every switch.

In ``digitrec_home()/models/``: ``v<N>/model.safetensors`` and ``v<N>/record.json`` (when,
who, why, from which model, the metrics at promotion), ``active.json`` (the active
version, replaced atomically, so a reader sees the old pointer or the new one) and
``log.jsonl`` (one line per promotion, activation or rollback). Version 0 is the model
shipped in the package: always there, never copied. No ``active.json``: the registry has
no say, and models resolve as they did before it (``runs.resolve_model_path``).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from digitrec.errors import DigitrecError
from digitrec.files import write_json
from digitrec.home import digitrec_home
from digitrec.records import now

MODEL = "model.safetensors"


class RegistryError(DigitrecError):
    """No such version, nothing to roll back to, or a damaged registry file."""


@dataclass(frozen=True)
class Version:
    number: int
    path: Path  # the checkpoint
    record: dict[str, Any]


def registry_root() -> Path:
    return digitrec_home() / "models"


def shipped_model_path() -> Path:
    """The model in the package: version 0."""
    return Path(str(resources.files("digitrec") / "assets" / "default.safetensors"))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path} cannot be read ({exc}): fix or remove it") from None


def version(number: int) -> Version:
    if number == 0:
        return Version(
            0, shipped_model_path(), {"version": 0, "why": "the model shipped with digitrec"}
        )
    folder = registry_root() / f"v{number}"
    if not (folder / MODEL).is_file():
        known = ", ".join(str(v.number) for v in versions())
        raise RegistryError(f"no model version {number} in {registry_root()} (versions: {known})")
    return Version(number, folder / MODEL, _read(folder / "record.json"))


def version_of(path: Path | None) -> int | None:
    """The registry's number for a checkpoint (or its export beside it), if it has one."""
    if path is None:
        return None
    if path.parent == shipped_model_path().parent and path.name.startswith("default."):
        return 0
    folder = path.parent
    if folder.parent == registry_root() and folder.name[1:].isdigit() and folder.name[0] == "v":
        return int(folder.name[1:])
    return None


def versions() -> list[Version]:
    root = registry_root()
    numbers = sorted(
        int(d.name[1:])
        for d in (root.iterdir() if root.is_dir() else [])
        if d.name[:1] == "v" and d.name[1:].isdigit() and (d / MODEL).is_file()
    )
    return [version(0), *(version(n) for n in numbers)]


def active() -> Version | None:
    """The active version, or None when nothing was ever promoted or activated."""
    pointer = registry_root() / "active.json"
    if not pointer.is_file():
        return None
    number = _read(pointer).get("version")
    if not isinstance(number, int):
        raise RegistryError(f"{pointer} names no version: fix or remove it")
    return version(number)


def pointer_stamp() -> tuple[int, int] | None:
    """Changes whenever the active pointer does (what a server polls: one stat call)."""
    try:
        st = (registry_root() / "active.json").stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino


def log() -> list[dict[str, Any]]:
    path = registry_root() / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no user name in a bare container
        return f"uid {os.getuid()}@{socket.gethostname()}"


def _switch(number: int, action: str, why: str, **extra: Any) -> Version:
    """Point ``active.json`` at ``number`` and log it."""
    target = version(number)
    current = active()
    write_json(registry_root() / "active.json", {"version": number, "since": now()})
    entry = {"time": now(), "action": action, "version": number,
             "previous": None if current is None else current.number, "who": _who(),
             "why": why, **extra}  # fmt: skip
    with open(registry_root() / "log.jsonl", "a") as f:  # one short line: an atomic append
        f.write(json.dumps(entry) + "\n")
    return target


def promote(
    checkpoint: Path,
    why: str,
    metrics: dict[str, Any],
    parent: int | None,
    companions: Sequence[Path] = (),
) -> Version:
    """Copy ``checkpoint`` in as the next version, with the ``companions`` it is to use
    (``NAME.KIND.*`` files, kept as ``model.KIND.*``: the reading model of the model it
    was fine-tuned from reads numbers with it), and make it active."""
    root = registry_root()
    root.mkdir(parents=True, exist_ok=True)
    number = max(v.number for v in versions()) + 1
    folder = root / f"v{number}"
    staging = root / f".v{number}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copyfile(checkpoint, staging / MODEL)
    for c in companions:
        kind_and_suffix = c.name.split(".", 1)[1]  # NAME.reader.onnx -> reader.onnx
        shutil.copyfile(c, staging / f"model.{kind_and_suffix}")
    record = {"version": number, "created": now(), "who": _who(), "why": why,
              "parent": parent, "source": str(checkpoint), "metrics": metrics,
              "companions": [str(c) for c in companions]}  # fmt: skip
    write_json(staging / "record.json", record)
    os.replace(staging, folder)  # the version appears whole or not at all
    return _switch(number, "promote", why, metrics=metrics)


def activate(number: int, why: str = "activated by hand") -> Version:
    return _switch(number, "activate", why)


def rollback(why: str = "rolled back by hand") -> Version:
    """Back to the version active before the current one was (version 0, the shipped
    model, before the first); a second rollback goes one further back."""
    stack: list[int] = []
    for entry in log():
        if entry.get("action") == "rollback":
            stack.pop() if stack else None
        else:
            stack.append(entry["version"])
    current = active()
    if current is None:
        raise RegistryError("nothing to roll back: no version was ever activated")
    target = stack[-2] if len(stack) >= 2 else 0
    if target == current.number:
        raise RegistryError(f"nothing to roll back to: version {current.number} was the first")
    return _switch(target, "rollback", why)
