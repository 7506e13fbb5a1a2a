"""A tiny name -> object registry with a decorator, the torchdistill way.

Hand-written because it is ten lines and every sub-package (loss terms, layer strategies, corpora, teachers)
needs the same "register by decorator, look up by name with a clear error" behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kd_plugin.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, key: str | None = None) -> T:
        if name not in self._items:
            raise ConfigError(key or self.kind, f"unknown {self.kind} {name!r}", ", ".join(sorted(self._items)))
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
