"""``reidx embed``: build, append to or resume an index directory, atomically."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reidx.checkpoint import LoadedModel
from reidx.console import console, emit_json
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.evaluation.embedders import Embedder, as_embedder
from reidx.gallery import DEFAULT_BACKEND, BackendRecord, Gallery, GalleryWrite, backend_class, open_gallery_dir
from reidx.io import exclusive_lock
from reidx.outputs import existing_output
from reidx.retrieval.index import (
    HEADER_NAME,
    INDEX_TYPES,
    PARTIAL_NAME,
    IndexHeader,
    check_header_model,
    fingerprint_mismatch,
    ivf_lists,
    ivfpq_params,
)
from reidx.retrieval.jobs import FLUSH_SECONDS, check_chunks, embed_to_chunks

if TYPE_CHECKING:
    from reidx.distributed import DistEnv


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
            emit_json({**fields, "header": asdict(self.header)})
            return
        header = self.header
        console.print(
            f"{self.directory}: {header.count} images ({self.added} added, {self.skipped} already indexed), "
            f"{header.index_type} index, {header.dim}-d {header.mode} embeddings"
        )


def build_index(
    model: LoadedModel | Embedder,
    table: pd.DataFrame,
    out: str | Path,
    *,
    mode: str | None = None,
    index_type: str | None = None,
    nlist: int = 0,
    pq_m: int = 0,
    nprobe: int = 0,
    on_disk: bool = False,
    reduce_dim: int = 0,
    append: bool = False,
    overwrite: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    devices: Devices = AUTO,
    chunk_size: int = 4096,
    flush_seconds: float = FLUSH_SECONDS,
    on_chunk: Callable[[int], None] | None = None,
    backend: str | None = None,
    uri: str | None = None,
    collection: str | None = None,
    shards: DistEnv | None = None,
) -> BuildResult | None:
    """Embed the images of ``table`` (columns path, pid, camid, ...) into the index directory ``out`` with
    ``model``: a loaded checkpoint in ``mode`` (default fused) or an embedder (e.g. an exported ONNX file's).

    New index: ``index_type`` flat (default) or ivfpq, its vectors in ``backend`` (:mod:`reidx.gallery`:
    faiss, the default, or milvus at ``uri`` in ``collection``); FAISS only: ``on_disk`` keeps ivfpq's
    inverted lists in a file (galleries larger than memory), ``reduce_dim`` puts a PCA to that many
    dimensions in the index (trained on the gallery). ``append``: add to the index in ``out``
    (same fingerprint, type and backend), skipping paths it already holds. Embeddings are kept in
    ``out/.partial`` until the index is written, so re-running an interrupted call resumes; the directory is
    replaced in one rename at the end, so a failure leaves any existing index as it was.

    ``shards`` (under ``torchrun``): every rank embeds its share (:mod:`reidx.retrieval.shards`), rank 0
    writes the one index and gets the result; the other ranks get None.
    """
    embedder = as_embedder(model, mode)
    if index_type is not None and index_type not in INDEX_TYPES:
        raise ReidxError(f"unknown index type {index_type!r}", f"use one of {', '.join(INDEX_TYPES)}")
    out = Path(out)
    sharded = shards is not None and shards.enabled
    state_dir = out / PARTIAL_NAME
    options = {
        "batch_size": batch_size,
        "workers": workers,
        "chunk_size": chunk_size,
        "flush_seconds": flush_seconds,
        "on_chunk": on_chunk,
    }
    if sharded:
        from reidx.retrieval.shards import embed_shards, share_paths

        if not shards.is_main:  # embed the share rank 0 sends; rank 0 alone checks, writes and reports
            paths = share_paths(shards)
            if paths:
                embed_shards(shards, embedder, paths, state_dir, **options)
            return None
    with exclusive_lock(out, "index"):
        try:
            fingerprint = embedder.fingerprint()
            existing = existing_index(out, append, overwrite)
            if existing is not None:
                check_compatible(existing, fingerprint, index_type, backend, on_disk or bool(reduce_dim))
            if existing is not None and (uri or collection):
                raise ReidxError("--uri and --collection name a new index's store", "drop them when appending")
            record = existing.record if existing is not None else new_record(out, backend, uri, collection)
            known = set(existing.metadata["path"]) if existing is not None else set()
            rows = table[~table["path"].isin(known)].drop_duplicates("path").reset_index(drop=True)
            skipped = len(table) - len(rows)
            if rows.empty and existing is None:
                raise ReidxError("no images to embed", "give images, folders or a --dataset")
            kind = existing.header.index_type if existing is not None else index_type or "flat"
            check_layout(kind, record.backend, on_disk, reduce_dim, len(rows))
            if existing is None and kind == "ivfpq":
                nlist = ivf_lists(len(rows), nlist)
            paths = list(rows["path"])
        except BaseException:
            if sharded:
                share_paths(shards, None)  # the other ranks stop; this one reports
            raise
        if sharded:
            share_paths(shards, paths)
        if not paths:
            return BuildResult(out, existing.header, 0, skipped)
        if sharded:
            chunks = embed_shards(shards, embedder, paths, state_dir, **options)
        else:
            chunks = embed_to_chunks(embedder, paths, state_dir, **options)
        if existing is None:
            dim = int(np.load(chunks[0], mmap_mode="r").shape[1])
            params = layout_params(dim, kind, nlist, pq_m, nprobe, on_disk, reduce_dim)
            source = str(embedder.source.resolve())
            header = IndexHeader(fingerprint, source, embedder.model_name, dim, 0, kind, params)
            header.image_roots = image_folders(paths)
            metadata = rows
        else:
            header = replace(existing.header, image_roots=image_folders(paths, existing.header.image_roots))
            metadata = pd.concat([existing.metadata.convert_dtypes(), rows.convert_dtypes()], ignore_index=True)
        check_chunks(chunks, paths)  # the one gate every backend's vectors pass
        backend_class(record.backend).write(GalleryWrite(out, header, existing, metadata, chunks, devices, record))
        return BuildResult(out, header, len(rows), skipped)


def image_folders(paths: Iterable[str], known: Sequence[str] = ()) -> list[str]:
    """The folders holding ``paths``, symlinks resolved, with the ``known`` ones, none inside another: the
    image roots a header records, the only places ``reidx serve`` hands gallery images out from."""
    folders = {*known, *(os.path.dirname(os.path.realpath(path)) for path in paths)}
    kept: set[str] = set()
    for folder in sorted(folders):  # a folder sorts before the folders inside it
        if not any(str(parent) in kept for parent in Path(folder).parents):
            kept.add(folder)
    return sorted(kept)


def new_record(out: Path, backend: str | None, uri: str | None, collection: str | None) -> BackendRecord:
    """Where a new index's vectors go: FAISS in ``out``, or a Milvus collection at ``uri``."""
    name = backend or DEFAULT_BACKEND
    backend_class(name)  # an unknown name is one line listing the backends
    if name == "faiss":
        if uri or collection:
            raise ReidxError("--uri and --collection are for --backend milvus", "drop them, or add --backend milvus")
        return BackendRecord()
    from reidx.gallery.milvus import default_collection, resolve_uri

    if collection is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", collection):
        raise ReidxError(f"--collection {collection!r} is not a Milvus name", "use letters, digits and _ only")
    return BackendRecord(name, resolve_uri(uri, out), collection or default_collection(out))


def existing_index(out: Path, append: bool, overwrite: bool) -> Gallery | None:
    """The index to append to, or None for a new one. Only an index reidx wrote may be appended to or
    replaced (``overwrite``); anything else in ``out`` is refused (:mod:`reidx.outputs`)."""
    if not existing_output(out, "index"):
        return None  # absent, empty, or only an interrupted first run's resume state
    if append:
        return open_gallery_dir(out, Devices("cpu"))
    if not overwrite:
        raise ReidxError(f"{out} already holds an index", "pass --append to add images or --overwrite to rebuild")
    return None


def check_layout(kind: str, backend: str, on_disk: bool, reduce_dim: int, count: int) -> None:
    """Refuse ``--on-disk`` without ivfpq, either option outside FAISS, and a PCA with fewer training
    images than dimensions."""
    if (on_disk or reduce_dim) and backend != "faiss":
        raise ReidxError("--on-disk and --reduce-dim shape a FAISS index", "drop them with --backend milvus")
    if on_disk and kind != "ivfpq":
        raise ReidxError("--on-disk keeps IVF-PQ inverted lists in a file; a flat index has none", "add --index ivfpq")
    if reduce_dim and count < reduce_dim:
        raise ReidxError(
            f"--reduce-dim {reduce_dim} needs at least {reduce_dim} images to train the PCA, there are {count}",
            "use a smaller --reduce-dim or drop it",
        )


def layout_params(
    dim: int, kind: str, nlist: int, pq_m: int, nprobe: int, on_disk: bool, reduce_dim: int
) -> dict[str, int]:
    """The header params of a new index: IVF-PQ's (for the reduced dim when there is a PCA), ``reduce_dim``
    and ``on_disk`` when asked for."""
    if reduce_dim and reduce_dim >= dim:
        raise ReidxError(
            f"--reduce-dim {reduce_dim} is not below the embedding dimension {dim}", f"use fewer than {dim}"
        )
    params = ivfpq_params(reduce_dim or dim, nlist, pq_m, nprobe) if kind == "ivfpq" else {}
    return params | ({"reduce_dim": reduce_dim} if reduce_dim else {}) | ({"on_disk": 1} if on_disk else {})


def check_compatible(
    existing: Gallery,
    fingerprint: dict[str, Any],
    index_type: str | None,
    backend: str | None = None,
    new_layout: bool = False,
) -> None:
    """Refuse to append embeddings of another model, mode or input size, into another index type or
    backend, with layout options (``--on-disk``, ``--reduce-dim``: the index keeps its own), or to an
    on-disk index."""
    if new_layout:
        raise ReidxError("--on-disk and --reduce-dim apply to a new index", "drop them when appending")
    if existing.header.params.get("on_disk"):
        raise ReidxError(
            f"cannot append to {existing.directory}: its inverted lists are on disk",
            "rebuild it with all the images and --overwrite",
        )
    mismatch = fingerprint_mismatch(existing.header.fingerprint, fingerprint)
    if mismatch:
        check_header_model(existing.header, existing.directory / HEADER_NAME)
        raise ReidxError(
            f"cannot append to {existing.directory}: it was embedded differently ({mismatch})",
            "use the index's checkpoint and --mode (or its `reidx export` file), or build a new index",
        )
    if index_type is not None and index_type != existing.header.index_type:
        raise ReidxError(
            f"{existing.directory} is a {existing.header.index_type} index, not {index_type}",
            "drop --index when appending",
        )
    if backend is not None and backend != existing.record.backend:
        raise ReidxError(
            f"{existing.directory} keeps its vectors in {existing.record.backend}, not {backend}",
            "drop --backend when appending",
        )
