"""Lazy package exports: a package maps its public names to the modules defining them, and each is imported on
first use, so importing one light module of the package (the options the CLI builds its flags from, say) loads
none of the heavy ones (torch, pandas)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports ``homes[name]`` when ``name`` is first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
