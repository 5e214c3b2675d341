"""The gallery backend interface: an index directory's header and metadata, and the engine holding its vectors.

Every index directory holds ``header.json`` and ``metadata.parquet`` (:mod:`reidx.retrieval.index`); where
its vectors live is named by ``backend.json`` (:class:`BackendRecord`; absent: ``faiss``, the vectors in
``index.faiss`` beside them). Each backend is a :class:`Gallery` subclass registered in :data:`BACKENDS`
by its module in this package; ``reidx search --gallery DIR`` opens any of them with :func:`open_gallery_dir`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from reidx.device import AUTO, Devices
from reidx.errors import ReidxError, one_line
from reidx.registry import Registry

if TYPE_CHECKING:
    from reidx.retrieval.filters import GalleryFilter
    from reidx.retrieval.index import IndexHeader

RECORD_NAME = "backend.json"
DEFAULT_BACKEND = "faiss"


#: Backend name -> its Gallery class.
BACKENDS: Registry[type[Gallery]] = Registry("gallery backend", "reidx.gallery")


@dataclass(frozen=True)
class BackendRecord:
    """``backend.json``: the engine holding an index directory's vectors, its address and collection."""

    backend: str = DEFAULT_BACKEND
    uri: str = ""
    collection: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def read_record(directory: Path) -> BackendRecord:
    """The backend record of an index directory (the default, FAISS, when it has none)."""
    path = directory / RECORD_NAME
    if not path.exists():
        return BackendRecord()
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        record = BackendRecord(**fields)
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        reason = one_line(exc)
        raise ReidxError(f"cannot read {path}: {reason}", "the file is corrupt; rebuild the index") from None
    if not all(isinstance(value, str) for value in asdict(record).values()):
        raise ReidxError(f"cannot read {path}: its fields are not text", "the file is corrupt; rebuild the index")
    return record


@dataclass
class GalleryWrite:
    """One write of an index directory: where, its header and whole metadata, the chunk files of the new vectors,
    the gallery appended to (None for a new one), the devices and where the vectors go."""

    out: Path
    header: IndexHeader
    existing: Gallery | None
    metadata: pd.DataFrame
    chunks: Sequence[Path]
    devices: Devices
    record: BackendRecord

    def check_chunks(self) -> None:
        """Refuse chunk files that are not float32 rows of the index's dimension (another model's embeddings
        appended, say), before a backend stores any of them."""
        from reidx.retrieval.jobs import read_chunk_shape

        for chunk in self.chunks:
            shape = read_chunk_shape(chunk)
            if shape is None or shape[1] != self.header.dim:
                found = f"{shape[1]}-d embeddings" if shape else "an unreadable embedding chunk"
                raise ReidxError(
                    f"cannot add to {self.out}: the model gives {found}, the index holds {self.header.dim}-d ones",
                    "embed with the index's checkpoint (or its `reidx export` file), or build a new index",
                )


class Gallery(ABC):
    """An opened index directory: header, metadata (row i = vector id i) and the backend holding the vectors.

    Results follow one contract whatever the backend: ``(scores, ids)``, inner products of normalised
    embeddings ranked best first, ties in gallery order, id -1 where there are fewer hits.
    """

    #: The backend's registered name.
    name: ClassVar[str]

    def __init__(self, directory: Path, header: IndexHeader, metadata: pd.DataFrame, record: BackendRecord) -> None:
        self.directory, self.header, self.metadata, self.record = directory, header, metadata, record

    def __len__(self) -> int:
        return self.header.count

    @property
    def on_gpu(self) -> bool:
        """Whether reidx searches the vectors on this machine's GPUs (a server's own devices do not count)."""
        return False

    @classmethod
    @abstractmethod
    def open(cls, directory: Path, record: BackendRecord, devices: Devices = AUTO) -> Gallery:
        """Read and check the index directory and reach its vectors; anything wrong is a ReidxError."""

    @classmethod
    @abstractmethod
    def write(cls, job: GalleryWrite) -> None:
        """Store the vectors of ``job.chunks`` (after those of ``job.existing``, when appending) and write the
        index directory ``job.out`` (header, the whole metadata) in one step; the caller holds its lock and has
        checked that ``job.out`` may be replaced."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (Q, min(k, len)), under the contract above."""

    def search_filtered(
        self,
        queries: np.ndarray,
        k: int,
        filters: GalleryFilter,
        camids: Sequence[int],
        names: Sequence[str],
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top k of each query (camera ``camids[i]``, named ``names[i]``) among the entries ``filters``
        lets through, in the unfiltered order (score -inf, id -1 where fewer pass). This default over-fetches
        ranked hits until k pass (:func:`reidx.retrieval.filters.filtered_top_k`); an engine with its own
        filter language overrides it."""
        from reidx.retrieval.filters import allowed_rows, filtered_top_k

        allowed = allowed_rows(filters, self.metadata, camids, names)
        return filtered_top_k(lambda rows, n: self.search(rows, n, nprobe), queries, k, allowed)

    def check_queries(self, queries: np.ndarray) -> np.ndarray:
        """The query embeddings as contiguous float32 rows of the index's dimension (others refused)."""
        from reidx.retrieval.index import checked_queries

        return checked_queries(queries, self.header.dim)


def backend_class(name: str) -> type[Gallery]:
    """The Gallery class of backend ``name`` (unknown: a one-line error listing the known ones)."""
    return BACKENDS.get(name)


def open_gallery_dir(directory: str | Path, devices: Devices = AUTO) -> Gallery:
    """Open the index directory ``directory`` with the backend its record names."""
    directory = Path(directory)
    record = read_record(directory) if directory.is_dir() else BackendRecord()
    return backend_class(record.backend).open(directory, record, devices)
