"""Schemas for the JSON records digitrec reads back: a checkpoint's metadata, an ONNX
export's, a run's config.json.

A damaged or crafted record is refused with one line naming the file and the field,
before any front end uses it (a list where an object belongs, or a string as the
normalization's mean, used to surface as an AttributeError or TypeError traceback).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from digitrec.errors import DigitrecError

Number = (int, float)


def now() -> str:
    """The timestamp every record digitrec writes carries (local time, with its offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class Required:
    """A field that must be present and not null."""

    rule: Any


# A rule is a type (or a tuple of types), [rule] for a list of such values, or
# {key: rule} for an object; an object's keys are optional (null or absent) unless
# Required, and keys a rule does not name are left alone.


def problem(value: Any, rule: Any, at: str = "the record") -> str | None:
    """What is wrong with ``value`` under ``rule``, or None."""
    if isinstance(rule, Required):
        rule = rule.rule
    if isinstance(rule, dict):
        if not isinstance(value, dict):
            return f"{at} is {_kind(value)}, not an object"
        prefix = "" if at == "the record" else f"{at}."
        for key, sub in rule.items():
            if value.get(key) is None:
                if isinstance(sub, Required):
                    return f"{prefix}{key} is missing or null"
                continue
            found = problem(value[key], sub, f"{prefix}{key}")
            if found:
                return found
        return None
    if isinstance(rule, list):
        if not isinstance(value, list):
            return f"{at} is {_kind(value)}, not a list"
        for i, item in enumerate(value):
            found = problem(item, rule[0], f"{at}[{i}]")
            if found:
                return found
        return None
    types = rule if isinstance(rule, tuple) else (rule,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = "a number" if types == Number else " or ".join(_NAMES[t] for t in types)
        return f"{at} is {_kind(value)}, not {wanted}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{at} is {value}, not a finite number"
    return None


def check(value: Any, rule: Any, where: str, error: type[DigitrecError] = DigitrecError) -> Any:
    """``value`` if it follows ``rule``; else ``error`` naming ``where`` and the field."""
    found = problem(value, rule)
    if found:
        raise error(f"{where} is damaged: {found}")
    return value


_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'object'}"
    return _NAMES.get(type(value), type(value).__name__)
