"""One registry of dataset readers: ``@register_dataset("name")`` and :func:`get_reader`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from reidx.data.base import DatasetReader
from reidx.errors import ReidxError

_BUILTIN_MODULES = ("market1501", "dukemtmc", "cuhk03", "viper", "caviar", "folder", "synthetic")
_READERS: dict[str, type[DatasetReader]] = {}


def register_dataset(name: str) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator: register a :class:`DatasetReader` subclass under ``name``."""

    def decorate(cls: type[DatasetReader]) -> type[DatasetReader]:
        if name in _READERS and _READERS[name] is not cls:
            raise ValueError(f"dataset {name!r} is already registered by {_READERS[name].__qualname__}")
        cls.name = name
        _READERS[name] = cls
        return cls

    return decorate


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"reidx.data.{module}")


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    _load_builtin()
    return sorted(_READERS)


def get_reader(name: str) -> DatasetReader:
    """A fresh reader for ``name``; an unknown name is a one-line error listing the known ones."""
    names = dataset_names()
    if name not in _READERS:
        raise ReidxError(f"unknown dataset {name!r}", f"choose one of: {', '.join(names)}")
    return _READERS[name]()
