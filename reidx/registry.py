"""One registry type for every extension point (datasets, models, backbones, image discriminators, gallery
backends): names to entries, each entry registered by a decorator in its own module of the registry's package.

``@REGISTRY.register("name")`` stamps ``entry.name = "name"``, so an entry never repeats its name. The package's
modules are imported on the first lookup (``names()`` or ``get()``), never before: adding an entry is one file in
that package, and importing the registry costs nothing. A lookup of an unknown name is one line listing the
registered ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from reidx.errors import ReidxError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` by name, registered by the modules of ``package`` (imported on first lookup; a
    plain module is imported alone)."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._loaded = package is None
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator adding its target as ``name`` and stamping ``name`` on it; another entry under a taken
        name is a ValueError."""

        def add(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            entry.name = name  # type: ignore[attr-defined]
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is a ReidxError listing the known ones."""
        names = self.names()
        if name not in self._entries:
            raise ReidxError(f"unknown {self.kind} {name!r}", f"use one of {', '.join(names)}")
        return self._entries[name]

    def load(self) -> None:
        """Import the package's modules (once), so that each registers what it defines."""
        if not self._loaded:
            import_package_modules(self.package)
            self._loaded = True


def import_package_modules(package: str) -> None:
    """Import ``package`` and, when it is a package, every module (and sub-package) in it."""
    path = getattr(importlib.import_module(package), "__path__", None)
    for module in pkgutil.iter_modules(path or []):
        importlib.import_module(f"{package}.{module.name}")
