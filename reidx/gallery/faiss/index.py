"""The default backend: the vectors in ``index.faiss`` inside the index directory (embedded, no server).

Beside the header and metadata (:mod:`reidx.gallery.directory`) the directory holds

* ``index.faiss``: the FAISS index (always written from a CPU copy), id i = row i of the metadata;
* ``lists.ivfdata`` (``--on-disk`` IVF-PQ only): the inverted lists, memory-mapped at search time.

Index types: ``flat`` (``IndexFlatIP``, exact) and ``ivfpq`` (``IndexIVFPQ``, trained on the gallery,
approximate). FAISS is imported lazily; indexes go to every GPU FAISS sees unless the device is ``cpu``
(:mod:`reidx.gallery.faiss.devices`). On the CPU a flat index is searched by numpy's BLAS over the vectors it
stores (:mod:`reidx.gallery.faiss.exact`: faster than FAISS's own exhaustive search on few cores, same tie
rule). Params ``reduce_dim`` (a PCA to that many dimensions, then L2 normalisation, inside the index: queries
keep the embedding's dim) and ``on_disk`` (IVF-PQ lists in a file) are recorded in the header.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidx.device import Devices
from reidx.errors import ReidxError, one_line
from reidx.gallery.base import BACKENDS, Gallery, GalleryWrite
from reidx.gallery.directory import (
    HEADER_NAME,
    INDEX_TYPES,
    METADATA_NAME,
    BackendRecord,
    IndexHeader,
    MetadataColumns,
    corrupt,
    rebuild_hint,
    write_directory,
)
from reidx.gallery.faiss.calls import pre_transformed, write_faiss
from reidx.gallery.faiss.devices import inner_index, to_cpu, to_device
from reidx.gallery.faiss.exact import exact_top_k, longest_row
from reidx.gallery.layout import PQ_BITS
from reidx.gallery.ranking import clamp_k, top_k

INDEX_NAME = "index.faiss"
#: The inverted lists of an ``--on-disk`` IVF-PQ index (``faiss.OnDiskInvertedLists``), beside INDEX_NAME.
LISTS_NAME = "lists.ivfdata"
#: Vectors used to train IVF-PQ quantizers (FAISS samples at most 256 points per centroid anyway).
MAX_TRAINING_VECTORS = 256 * 1024


@BACKENDS.register("faiss")
class FaissGallery(Gallery):
    """An index directory whose vectors are its ``index.faiss`` (on the GPUs when ``devices.faiss_gpu``)."""

    tunes_layout = True
    keeps_vectors = True

    def __init__(
        self,
        directory: Path,
        header: IndexHeader,
        columns: MetadataColumns,
        record: BackendRecord,
        index: Any,
        on_gpu: bool = False,
    ) -> None:
        super().__init__(directory, header, columns, record)
        self.index, self._on_gpu = index, on_gpu
        self.gallery_norm: float | None = None  # the longest stored vector (exact CPU search)

    @property
    def on_gpu(self) -> bool:
        return self._on_gpu

    @classmethod
    def vector_files(cls, header: IndexHeader) -> tuple[str, ...]:
        return (INDEX_NAME, LISTS_NAME) if header.params.get("on_disk") else (INDEX_NAME,)

    @classmethod
    def open_vectors(
        cls, directory: Path, header: IndexHeader, columns: MetadataColumns, record: BackendRecord, devices: Devices
    ) -> FaissGallery:
        import faiss

        from reidx.gallery.faiss.ondisk import read_on_disk

        index_path = directory / INDEX_NAME
        on_disk = bool(header.params.get("on_disk"))
        try:
            # on-disk inverted lists are memory-mapped from LISTS_NAME beside the index file
            index = read_on_disk(index_path) if on_disk else faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise ReidxError(f"cannot read {index_path}: {one_line(exc, keep='last')}", corrupt()) from None
        kind = faiss.IndexIVFPQ if header.index_type == "ivfpq" else faiss.IndexFlat
        inner = inner_index(index)
        reduced = inner.d if isinstance(index, faiss.IndexPreTransform) else None
        if (
            not isinstance(inner, kind)
            or reduced != header.params.get("reduce_dim")
            or inner.metric_type != faiss.METRIC_INNER_PRODUCT
            or not index.is_trained
        ):
            raise ReidxError(
                f"{index_path} is not the trained inner-product {header.index_type} index {HEADER_NAME} describes",
                corrupt(),
            )
        counts = {HEADER_NAME: header.count, INDEX_NAME: index.ntotal, METADATA_NAME: len(columns)}
        if len(set(counts.values())) != 1 or index.d != header.dim:
            found = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise ReidxError(f"index {directory} is inconsistent (entries: {found}; dim {index.d})", rebuild_hint())
        # on-disk lists are for galleries larger than memory: they stay memory-mapped on the CPU
        index, on_gpu = to_device(index, Devices("cpu") if on_disk else devices)
        return cls(directory, header, columns, record, index, on_gpu)

    @classmethod
    def write(cls, job: GalleryWrite) -> None:
        job.check_chunks()
        if isinstance(job.existing, FaissGallery):
            index = job.existing.index
        else:
            index = new_faiss_index(job.header.dim, job.header.index_type, job.header.params)
        index, on_gpu = to_device(index, job.devices)
        if not index.is_trained:
            index.train(training_sample(job.chunks, MAX_TRAINING_VECTORS))
        if job.header.params.get("on_disk"):  # the vectors go straight to the lists file, in shards
            from reidx.gallery.faiss.ondisk import write_on_disk

            job.header.count = sum(int(np.load(chunk, mmap_mode="r").shape[0]) for chunk in job.chunks)
            vectors = (np.load(chunk) for chunk in job.chunks)
            trained = to_cpu(index, on_gpu)
            write_directory(
                job.out,
                job.header,
                job.metadata,
                vectors=lambda tmp: write_on_disk(trained, vectors, tmp / INDEX_NAME, tmp / LISTS_NAME),
                extra=job.extra,
            )
            return
        for chunk in job.chunks:
            index.add(np.load(chunk))
        job.header.count = int(index.ntotal)
        filled = to_cpu(index, on_gpu)
        write_directory(
            job.out,
            job.header,
            job.metadata,
            vectors=lambda tmp: write_faiss(filled, tmp / INDEX_NAME),
            extra=job.extra,
        )

    def exact_vectors(self) -> np.ndarray | None:
        """A flat index's vectors (a CPU copy when it is on the GPUs); None for ivfpq or a PCA-reduced index."""
        if self.header.index_type != "flat" or self.header.params.get("reduce_dim"):
            return None
        if self.on_gpu:  # the view must not outlive the CPU copy it looks into
            return flat_vectors(inner_index(to_cpu(self.index, True))).copy()
        return flat_vectors(inner_index(self.index))

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (Q, min(k, len)), ranked by inner product, ties in gallery order.

        ``ids`` index the metadata rows; an approximate index may return fewer than k hits (id -1).
        """
        queries = self.check_queries(queries)
        k = clamp_k(k, self.header.count)
        if self.header.index_type == "flat" and not self.on_gpu and self.header.count:
            vectors = flat_vectors(inner_index(self.index))
            if self.gallery_norm is None:
                self.gallery_norm = longest_row(vectors)
            return exact_top_k(vectors, pre_transformed(self.index, queries), k, self.gallery_norm)
        if self.header.index_type == "ivfpq":
            set_nprobe(self.index, nprobe or self.header.params["nprobe"], self.on_gpu)
        return top_k(self.index.search, queries, k, self.header.count)


def training_sample(chunks: Sequence[Path], limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` vectors drawn uniformly (seeded) from the chunk files, without loading them all."""
    arrays = [np.load(chunk, mmap_mode="r") for chunk in chunks]
    total = sum(len(array) for array in arrays)
    if total <= limit:
        return np.ascontiguousarray(np.concatenate(arrays))
    picked = np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
    parts, start = [], 0
    for array in arrays:
        inside = picked[(picked >= start) & (picked < start + len(array))] - start
        parts.append(array[inside])
        start += len(array)
    return np.ascontiguousarray(np.concatenate(parts))


def new_faiss_index(dim: int, index_type: str, params: dict[str, int]) -> Any:
    """An empty CPU index for normalised vectors under the inner product; ``params["reduce_dim"]`` puts a
    PCA to that many dimensions (then L2 normalisation) in front of it (``faiss.IndexPreTransform``)."""
    import faiss

    inner_dim = params.get("reduce_dim", dim)
    if index_type == "flat":
        index = faiss.IndexFlatIP(inner_dim)
    elif index_type == "ivfpq":
        quantizer = faiss.IndexFlatIP(inner_dim)
        index = faiss.IndexIVFPQ(
            quantizer, inner_dim, params["nlist"], params["pq_m"], PQ_BITS, faiss.METRIC_INNER_PRODUCT
        )
        index.nprobe = params["nprobe"]
    else:
        raise ReidxError(f"unknown index type {index_type!r}", f"use one of {', '.join(INDEX_TYPES)}")
    if inner_dim == dim:
        return index
    wrapped = faiss.IndexPreTransform(index)
    wrapped.prepend_transform(faiss.NormalizationTransform(inner_dim, 2.0))
    wrapped.prepend_transform(faiss.PCAMatrix(dim, inner_dim))
    return wrapped


def set_nprobe(index: Any, nprobe: int, on_gpu: bool) -> None:
    """Set the number of inverted lists an IVF index visits per query."""
    import faiss

    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", nprobe)


def flat_vectors(index: Any) -> np.ndarray:
    """The (ntotal, d) float32 vectors a CPU ``IndexFlat`` stores, as a view (no copy; keep the index alive)."""
    import faiss

    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
