"""One registry of dataset readers: ``@register_dataset("name")`` and :func:`get_reader`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from reidx.data.base import DatasetReader
from reidx.registry import Registry

_BUILTIN_MODULES = (
    "market1501",
    "dukemtmc",
    "cuhk03",
    "viper",
    "caviar",
    "threedpes",
    "sarc3d",
    "towncentre",
    "folder",
    "synthetic",
)


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"reidx.data.{module}")


_READERS: Registry[type[DatasetReader]] = Registry("dataset", load=_load_builtin)


def register_dataset(name: str) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator: register a :class:`DatasetReader` subclass under ``name``."""

    def decorate(cls: type[DatasetReader]) -> type[DatasetReader]:
        cls = _READERS.register(name)(cls)
        cls.name = name
        return cls

    return decorate


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return _READERS.names()


def get_reader(name: str) -> DatasetReader:
    """A fresh reader for ``name``; an unknown name is a one-line error listing the known ones."""
    return _READERS.get(name)()
