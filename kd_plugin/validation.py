"""Typed reads of config values: each returns the value or raises ``ConfigError`` naming the user's key.

Sacred hands over whatever the command line parsed (``with masking.mlm_probability=x`` arrives as the string
``'x'``), so every number, flag and choice is checked for its type as well as its range before any compute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kd_plugin.errors import ConfigError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(value: Any, key: str, minimum: int | None = 1, maximum: int | None = None,
            allow_none: bool = False) -> int | None:
    """An int (not a bool, not a float) in ``[minimum, maximum]``; ``None`` when ``allow_none``."""
    if value is None and allow_none:
        return None
    low = "" if minimum is None else f">= {minimum}"
    high = "" if maximum is None else f"<= {maximum}"
    allowed = (f"an integer {low}{' and ' if low and high else ''}{high}".rstrip() +
               (" or null" if allow_none else ""))
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not an integer", allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(key, f"{value!r} is out of range", allowed)
    return value


def number(value: Any, key: str, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False, allow_none: bool = False) -> float | None:
    """A finite int or float in the interval; returned as float."""
    if value is None and allow_none:
        return None
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"a number in {lo}{low}, {high}{hi}" + (" or null" if allow_none else "")
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(key, f"{value!r} is not a finite number", allowed)
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not inside:
        raise ConfigError(key, f"{value!r} is out of range", allowed)
    return float(value)


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a boolean", "true or false")
    return value


def choice(value: Any, key: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(key, f"{value!r} is not one of the choices", ", ".join(map(str, choices)))
    return value


def text(value: Any, key: str, allow_none: bool = False, what: str = "a non-empty string") -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"{value!r} is not {what}", what + (" or null" if allow_none else ""))
    return value


def optional_directory(value: Any, key: str) -> Path | None:
    """A folder, or None for null or an empty string (the experiment then picks its own place)."""
    return None if not value else Path(text(value, key, what="a directory"))


def block(cfg: Mapping[str, Any], key: str, known: Iterable[str], *, none_is_empty: bool = False) -> dict[str, Any]:
    """A nested config block as a dict, refusing keys nobody reads (a typo would otherwise be ignored).

    none_is_empty: a missing or null block reads as ``{}`` (blocks whose every setting is optional).
    """
    value = cfg.get(key)
    if value is None and none_is_empty:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"{value!r} is not a block of settings", f"{key}.<setting>=... updates")
    known = tuple(known)
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key", ", ".join(known))
    return dict(value)
