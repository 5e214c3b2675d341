"""One registry of dataset readers (``reidx prepare --dataset``): ``@register_dataset("name")`` on a
:class:`DatasetReader` subclass in its own module of :mod:`reidx.data.readers`, and :func:`get_reader`."""

from __future__ import annotations

from collections.abc import Callable

from reidx.data.base import DatasetReader
from reidx.registry import Registry

READERS: Registry[type[DatasetReader]] = Registry("dataset", "reidx.data.readers")


def register_dataset(name: str) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator: register a :class:`DatasetReader` subclass as ``name`` (stamped as its ``name``)."""
    return READERS.register(name)


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return READERS.names()


def get_reader(name: str) -> DatasetReader:
    """A fresh reader for ``name``; an unknown name is a one-line error listing the known ones."""
    return READERS.get(name)()
