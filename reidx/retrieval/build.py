"""``reidx embed``: build, append to or resume an index directory, atomically."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidx.checkpoint import LoadedModel
from reidx.console import console
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.evaluation.embed import check_mode
from reidx.io import exclusive_lock
from reidx.outputs import existing_output
from reidx.retrieval.embedder import FLUSH_SECONDS, embed_to_chunks, embedding_fingerprint
from reidx.retrieval.index import (
    INDEX_TYPES,
    PARTIAL_NAME,
    GalleryIndex,
    IndexHeader,
    fingerprint_mismatch,
    ivf_lists,
    ivfpq_params,
    new_faiss_index,
    to_cpu,
    to_device,
    write_index_dir,
)

#: Vectors used to train IVF-PQ quantizers (FAISS samples at most 256 points per centroid anyway).
MAX_TRAINING_VECTORS = 256 * 1024


@dataclass
class BuildResult:
    """What ``build_index`` did: the header written (or kept), images added, images already indexed."""

    directory: Path
    header: IndexHeader
    added: int
    skipped: int

    def show(self, as_json: bool = False) -> None:
        """A one-line summary, or the header and counts as JSON on stdout."""
        if as_json:
            fields = {"directory": str(self.directory), "added": self.added, "skipped": self.skipped}
            print(json.dumps({**fields, "header": asdict(self.header)}, indent=2))
            return
        header = self.header
        console.print(
            f"{self.directory}: {header.count} images ({self.added} added, {self.skipped} already indexed), "
            f"{header.index_type} index, {header.dim}-d {header.mode} embeddings"
        )


def build_index(
    loaded: LoadedModel,
    table: pd.DataFrame,
    out: str | Path,
    *,
    mode: str = "fused",
    index_type: str | None = None,
    nlist: int = 0,
    pq_m: int = 0,
    nprobe: int = 0,
    append: bool = False,
    overwrite: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    devices: Devices = AUTO,
    chunk_size: int = 4096,
    flush_seconds: float = FLUSH_SECONDS,
    on_chunk: Callable[[int], None] | None = None,
) -> BuildResult:
    """Embed the images of ``table`` (columns path, pid, camid, ...) into the index directory ``out``.

    New index: ``index_type`` flat (default) or ivfpq. ``append``: add to the index in ``out`` (same
    fingerprint and type), skipping paths it already holds. Embeddings are kept in ``out/.partial``
    until the index is written, so re-running an interrupted call resumes; the directory is replaced in
    one rename at the end, so a failure leaves any existing index as it was.
    """
    check_mode(loaded, mode)
    if index_type is not None and index_type not in INDEX_TYPES:
        raise ReidxError(f"unknown index type {index_type!r}", f"use one of {', '.join(INDEX_TYPES)}")
    out = Path(out)
    with exclusive_lock(out, "index"):
        fingerprint = embedding_fingerprint(loaded, mode)
        existing = existing_index(out, append, overwrite)
        if existing is not None:
            check_compatible(existing, fingerprint, index_type)
        known = set(existing.metadata["path"]) if existing is not None else set()
        rows = table[~table["path"].isin(known)].drop_duplicates("path").reset_index(drop=True)
        skipped = len(table) - len(rows)
        if rows.empty:
            if existing is None:
                raise ReidxError("no images to embed", "give images, folders or a --dataset")
            return BuildResult(out, existing.header, 0, skipped)
        kind = existing.header.index_type if existing is not None else index_type or "flat"
        if existing is None and kind == "ivfpq":
            nlist = ivf_lists(len(rows), nlist)
        paths = list(rows["path"])
        chunks = embed_to_chunks(
            loaded,
            paths,
            mode,
            out / PARTIAL_NAME,
            batch_size=batch_size,
            workers=workers,
            chunk_size=chunk_size,
            flush_seconds=flush_seconds,
            on_chunk=on_chunk,
        )
        if existing is None:
            dim = int(np.load(chunks[0], mmap_mode="r").shape[1])
            params = ivfpq_params(dim, nlist, pq_m, nprobe) if kind == "ivfpq" else {}
            header = IndexHeader(fingerprint, str(loaded.path.resolve()), loaded.name, dim, 0, kind, params)
            index, metadata = new_faiss_index(dim, kind, params), rows
        else:
            header, index = existing.header, existing.index
            metadata = pd.concat([existing.metadata.convert_dtypes(), rows.convert_dtypes()], ignore_index=True)
        index, on_gpu = to_device(index, devices)
        if not index.is_trained:
            index.train(training_sample(chunks, MAX_TRAINING_VECTORS))
        for chunk in chunks:
            index.add(np.load(chunk))
        header.count = int(index.ntotal)
        write_index_dir(out, header, to_cpu(index, on_gpu), metadata)
        return BuildResult(out, header, len(rows), skipped)


def existing_index(out: Path, append: bool, overwrite: bool) -> GalleryIndex | None:
    """The index to append to, or None for a new one. Only an index reidx wrote may be appended to or
    replaced (``overwrite``); anything else in ``out`` is refused (:mod:`reidx.outputs`)."""
    if not existing_output(out, "index"):
        return None  # absent, empty, or only an interrupted first run's resume state
    if append:
        return GalleryIndex.open(out, Devices("cpu"))
    if not overwrite:
        raise ReidxError(f"{out} already holds an index", "pass --append to add images or --overwrite to rebuild")
    return None


def check_compatible(existing: GalleryIndex, fingerprint: dict[str, Any], index_type: str | None) -> None:
    """Refuse to append embeddings of another model, mode or input size, or into another index type."""
    mismatch = fingerprint_mismatch(existing.header.fingerprint, fingerprint)
    if mismatch:
        raise ReidxError(
            f"cannot append to {existing.directory}: it was embedded differently ({mismatch})",
            "use the index's checkpoint and --mode, or build a new index",
        )
    if index_type is not None and index_type != existing.header.index_type:
        raise ReidxError(
            f"{existing.directory} is a {existing.header.index_type} index, not {index_type}",
            "drop --index when appending",
        )


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
