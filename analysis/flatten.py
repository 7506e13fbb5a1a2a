"""Nested run documents -> flat, dotted column names (``student.layers``, ``optim.lr``), hashable values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def hashable(value: Any) -> Any:
    """Lists become tuples (recursively) so config values can be grouped on and compared."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    return value


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"student": {"layers": "alternate"}, "T": 2}`` -> ``{"student.layers": "alternate", "T": 2}``.

    Empty mappings vanish (they carry no value); lists become tuples.
    """
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = hashable(value)
    return flat
