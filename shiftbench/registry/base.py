"""A generic name -> component registry, used for every kind of component.

Datasets, pairs, suites, models and protocols all live in one of these. Adding a name twice is
an error that names both origins; asking for an unknown name suggests the closest ones.

>>> r = Registry("pair")
>>> r.add("fpb_to_tfns", 1, origin="builtin.yaml")
>>> r.get("fpb_to_tfns")
1
>>> r.get("fpb_to_tfn")
Traceback (most recent call last):
...
shiftbench.core.errors.ShiftbenchError: unknown pair 'fpb_to_tfn' (did you mean 'fpb_to_tfns'?)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, item: T, origin: str = "<code>") -> None:
        if name in self._items:
            raise ShiftbenchError(
                f"duplicate {self.kind} {preview(name)}: defined in {self._origins[name]} and again in {origin}"
            )
        self._items[name] = item
        self._origins[name] = origin

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ShiftbenchError(f"unknown {self.kind} {preview(name)}{did_you_mean(name, self._items)}") from None

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]
