"""One registry type for the extension points (datasets, models, backbones): names to entries, filled by a
decorator in each entry's own module; a lookup of an unknown name is one line listing the registered ones."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from reidx.errors import ReidxError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` by name; ``load`` (optional) imports the modules that register them."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._load = load
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator adding its target as ``name``; another entry under a taken name is a ValueError."""

        def add(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        if self._load is not None:
            self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is a ReidxError listing the known ones."""
        names = self.names()
        if name not in self._entries:
            raise ReidxError(f"unknown {self.kind} {name!r}", f"use one of {', '.join(names)}")
        return self._entries[name]


def import_package_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__path__``), so each registers what it defines."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
