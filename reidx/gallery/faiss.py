"""The default backend: the vectors in ``index.faiss`` inside the index directory (embedded, no server).

A thin adapter around :class:`reidx.retrieval.index.GalleryIndex`, which owns the FAISS index itself (types,
GPUs, the tie-exact top k).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reidx.device import AUTO, Devices
from reidx.gallery.base import BACKENDS, BackendRecord, Gallery, GalleryWrite
from reidx.retrieval.index import GalleryIndex, new_faiss_index, to_cpu, to_device, write_index_dir

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
    def write(cls, job: GalleryWrite) -> None:
        job.check_chunks()
        if isinstance(job.existing, FaissGallery):
            index = job.existing.index.index
        else:
            index = new_faiss_index(job.header.dim, job.header.index_type, job.header.params)
        index, on_gpu = to_device(index, job.devices)
        if not index.is_trained:
            index.train(training_sample(job.chunks, MAX_TRAINING_VECTORS))
        if job.header.params.get("on_disk"):  # the vectors go straight to the lists file, in shards
            job.header.count = sum(int(np.load(chunk, mmap_mode="r").shape[0]) for chunk in job.chunks)
            vectors = (np.load(chunk) for chunk in job.chunks)
            write_index_dir(job.out, job.header, to_cpu(index, on_gpu), job.metadata, on_disk=vectors)
            return
        for chunk in job.chunks:
            index.add(np.load(chunk))
        job.header.count = int(index.ntotal)
        write_index_dir(job.out, job.header, to_cpu(index, on_gpu), job.metadata)

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
