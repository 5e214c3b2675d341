"""The default backend: the vectors in ``index.faiss`` inside the index directory (embedded, no server).

A thin adapter around :class:`reidx.retrieval.index.GalleryIndex`, which owns the FAISS index itself (types,
GPUs, the tie-exact top k).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from reidx.device import AUTO, Devices
from reidx.gallery.base import BACKENDS, BackendRecord, Gallery
from reidx.retrieval.index import GalleryIndex, IndexHeader, new_faiss_index, to_cpu, to_device, write_index_dir

#: Vectors used to train IVF-PQ quantizers (FAISS samples at most 256 points per centroid anyway).
MAX_TRAINING_VECTORS = 256 * 1024


@BACKENDS.register("faiss")
class FaissGallery(Gallery):
    """An index directory whose vectors are its ``index.faiss`` (on the GPUs when ``devices.faiss_gpu``)."""

    name = "faiss"

    def __init__(self, index: GalleryIndex, record: BackendRecord) -> None:
        super().__init__(index.directory, index.header, index.metadata, record)
        self.index = index

    @property
    def on_gpu(self) -> bool:
        return self.index.on_gpu

    @classmethod
    def open(cls, directory: Path, record: BackendRecord, devices: Devices = AUTO) -> FaissGallery:
        return cls(GalleryIndex.open(directory, devices), record)

    @classmethod
    def write(
        cls,
        out: Path,
        header: IndexHeader,
        existing: Gallery | None,
        metadata: pd.DataFrame,
        chunks: Sequence[Path],
        devices: Devices,
        record: BackendRecord,
    ) -> None:
        if isinstance(existing, FaissGallery):
            index = existing.index.index
        else:
            index = new_faiss_index(header.dim, header.index_type, header.params)
        index, on_gpu = to_device(index, devices)
        if not index.is_trained:
            index.train(training_sample(chunks, MAX_TRAINING_VECTORS))
        if header.params.get("on_disk"):  # the vectors go straight to the lists file, in shards
            header.count = sum(int(np.load(chunk, mmap_mode="r").shape[0]) for chunk in chunks)
            vectors = (np.load(chunk) for chunk in chunks)
            write_index_dir(out, header, to_cpu(index, on_gpu), metadata, on_disk=vectors)
            return
        for chunk in chunks:
            index.add(np.load(chunk))
        header.count = int(index.ntotal)
        write_index_dir(out, header, to_cpu(index, on_gpu), metadata)

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, nprobe)


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
