"""The gallery backend interface: an opened index directory (:mod:`reidx.gallery.directory`) and the engine
holding its vectors.

Each backend is one module of this package: a :class:`Gallery` subclass registered in :data:`BACKENDS`,
with its own ``Options`` (the flags of ``reidx embed --backend NAME``) and ``new_record``. ``reidx search
--gallery DIR`` opens any of them with :func:`open_gallery_dir`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.gallery.directory import (
    DEFAULT_BACKEND,
    BackendRecord,
    IndexHeader,
    MetadataColumns,
    check_files,
    read_header,
    read_metadata,
    read_record,
)
from reidx.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from reidx.gallery.filters import GalleryFilter


#: Backend name -> its Gallery class.
BACKENDS: Registry[type[Gallery]] = Registry("gallery backend", "reidx.gallery")


def read_chunk_shape(chunk: Path) -> tuple[int, int] | None:
    """``(rows, dim)`` of a readable float32 embedding chunk file, None for a damaged one."""
    try:
        vectors = np.load(chunk, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.dtype != np.float32:
        return None
    return int(vectors.shape[0]), int(vectors.shape[1])


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
    #: Writes the optional files of the directory (``rerank.npz``) into the new folder, if any.
    extra: Callable[[Path], None] | None = None

    def check_chunks(self) -> None:
        """Refuse chunk files that are not float32 rows of the index's dimension (another model's embeddings
        appended, say), before a backend stores any of them."""
        for chunk in self.chunks:
            shape = read_chunk_shape(chunk)
            if shape is None or shape[1] != self.header.dim:
                found = f"{shape[1]}-d embeddings" if shape else "an unreadable embedding chunk"
                raise ReidxError(
                    f"cannot add to {self.out}: the model gives {found}, the index holds {self.header.dim}-d ones",
                    "embed with the index's checkpoint (or its `reidx export` file), or build a new index",
                )


@dataclass(frozen=True)
class NoOptions:
    """A backend that takes no options of its own."""


class Gallery(ABC):
    """An opened index directory: header, metadata (row i = vector id i; ``columns[name]`` one column in numpy,
    :attr:`metadata` the table in pandas) and the backend holding the vectors.

    Results follow one contract whatever the backend (:mod:`reidx.gallery.ranking`): ``(scores, ids)``, inner
    products of normalised embeddings ranked best first, ties in gallery order, id -1 where there are fewer hits.
    """

    #: The backend's registered name.
    name: ClassVar[str]
    #: The backend's own ``reidx embed`` options (a dataclass of :func:`reidx.options.option`s).
    Options: ClassVar[type] = NoOptions
    #: Whether the backend takes the FAISS layout options (``--on-disk``, ``--reduce-dim``).
    tunes_layout: ClassVar[bool] = False
    #: Whether a flat index of the backend keeps the exact embeddings (:meth:`exact_vectors`).
    keeps_vectors: ClassVar[bool] = False

    def __init__(self, directory: Path, header: IndexHeader, columns: MetadataColumns, record: BackendRecord) -> None:
        self.directory, self.header, self.columns, self.record = directory, header, columns, record

    def __len__(self) -> int:
        return self.header.count

    @property
    def metadata(self) -> pd.DataFrame:
        """The metadata table in pandas (imported on first use)."""
        return self.columns.frame()

    @property
    def on_gpu(self) -> bool:
        """Whether reidx searches the vectors on this machine's GPUs (a server's own devices do not count)."""
        return False

    @classmethod
    def open(cls, directory: Path, record: BackendRecord, devices: Devices = AUTO) -> Gallery:
        """Read and check the index directory (header, the backend's files, metadata), then reach its vectors;
        anything wrong is a ReidxError."""
        header = read_header(directory)
        check_files(directory, cls.vector_files(header), record)
        return cls.open_vectors(directory, header, read_metadata(directory), record, devices)

    @classmethod
    def vector_files(cls, header: IndexHeader) -> tuple[str, ...]:
        """The files the backend keeps in the index directory beside the header and metadata."""
        return ()

    @classmethod
    @abstractmethod
    def open_vectors(
        cls, directory: Path, header: IndexHeader, columns: MetadataColumns, record: BackendRecord, devices: Devices
    ) -> Gallery:
        """The opened gallery: its vectors reached and checked against the header and metadata."""

    @classmethod
    def new_record(cls, out: Path, options: Any) -> BackendRecord:
        """Where a new index in ``out`` keeps its vectors, from the backend's checked ``options``."""
        return BackendRecord(cls.name)

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
        ranked hits until k pass (:func:`reidx.gallery.filters.filtered_top_k`); an engine with its own
        filter language overrides it."""
        from reidx.gallery.filters import allowed_rows, filtered_top_k

        allowed = allowed_rows(filters, self.columns, camids, names)
        return filtered_top_k(lambda rows, n: self.search(rows, n, nprobe), queries, k, allowed)

    def exact_vectors(self) -> np.ndarray | None:
        """The stored embeddings, row i = vector id i, exactly as embedded (for re-ranking and query expansion),
        or None where the backend does not keep them so (approximate, reduced or remote vectors). It may be a
        view into the open index: keep the gallery open while using it (or copy it)."""
        return None

    def check_queries(self, queries: np.ndarray) -> np.ndarray:
        """The query embeddings as contiguous float32 rows of the index's dimension (others refused)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.header.dim:
            raise ReidxError(
                f"query embeddings have shape {queries.shape}, the index holds {self.header.dim}-d vectors",
                "embed the queries with the index's model and mode",
            )
        return queries


def backend_class(name: str) -> type[Gallery]:
    """The Gallery class of backend ``name`` (unknown: a one-line error listing the known ones)."""
    return BACKENDS.get(name)


def open_gallery_dir(directory: str | Path, devices: Devices = AUTO) -> Gallery:
    """Open the index directory ``directory`` with the backend its record names."""
    directory = Path(directory)
    record = read_record(directory) if directory.is_dir() else BackendRecord()
    return backend_class(record.backend).open(directory, record, devices)


def option_flags(options: type) -> list[str]:
    """The ``reidx embed`` flags of a backend's options."""
    return [spec.metadata.get("flag") or f"--{spec.name.replace('_', '-')}" for spec in fields(options)]


@dataclass(frozen=True)
class StoreRequest:
    """Where ``reidx embed`` puts the vectors: the backend named (None: the default for a new index, the
    existing one's when appending) and the backend option values given (field name -> value, any backend's;
    None = not given)."""

    backend: str | None = None
    values: dict[str, Any] | None = None

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in (self.values or {}).items() if value is not None}

    def check_appending(self) -> None:
        """Refuse backend options when appending: they name a new index's store."""
        given = self.given()
        if given:
            owner = next(cls for cls in map(backend_class, BACKENDS.names()) if given.keys() & _names(cls.Options))
            raise ReidxError(
                f"{' and '.join(option_flags(owner.Options))} name a new index's store", "drop them when appending"
            )

    def new_record(self, out: Path) -> BackendRecord:
        """The record of a new index in ``out``: the named backend's own options checked and applied; an
        option of another backend is refused."""
        cls = backend_class(self.backend or DEFAULT_BACKEND)
        given = self.given()
        for other in map(backend_class, BACKENDS.names()):
            if other is not cls and given.keys() & (_names(other.Options) - _names(cls.Options)):
                flags = " and ".join(option_flags(other.Options))
                raise ReidxError(f"{flags} are for --backend {other.name}", f"drop them, or add --backend {other.name}")
        return cls.new_record(out, cls.Options(**{key: given[key] for key in _names(cls.Options) if key in given}))


def _names(options: type) -> set[str]:
    return {spec.name for spec in fields(options)}


def backend_options() -> list[type]:
    """Every backend's ``Options`` (the ``reidx embed`` flags of the backends), in name order."""
    return [backend_class(name).Options for name in BACKENDS.names()]
