"""A registry of named strategies: the one place a placement axis lists what it can lower.

The schema's allowed values and the composition check read the registries, so a new strategy is one class
plus one `register` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, axis: str):
        self.axis = axis                      # the config key this registry serves, e.g. "kv.store"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def add(cls: type) -> type:
            if name in self._items:
                raise ValueError(f"{self.axis}: '{name}' registered twice")
            cls.name = name
            self._items[name] = cls()
            return cls
        return add

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)
