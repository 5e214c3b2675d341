"""``reidx embed``: build, append to or resume an index directory, atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
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
from reidx.gallery import (
    BackendRecord,
    Gallery,
    GalleryWrite,
    IndexHeader,
    IndexSpec,
    StoreRequest,
    backend_class,
    open_gallery_dir,
)
from reidx.gallery.directory import (
    HEADER_NAME,
    PARTIAL_NAME,
    RERANK_NAME,
    check_header_model,
    fingerprint_mismatch,
)
from reidx.gallery.layout import ivf_lists
from reidx.io import exclusive_lock
from reidx.outputs import existing_output
from reidx.retrieval.jobs import check_chunks, embed_to_chunks
from reidx.retrieval.requests import EmbedJob
from reidx.retrieval.rerank.stored import gallery_vectors, graph_to_write, needs_refresh

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
    spec: IndexSpec = IndexSpec(),
    job: EmbedJob = EmbedJob(),
    store: StoreRequest = StoreRequest(),
    append: bool = False,
    overwrite: bool = False,
    devices: Devices = AUTO,
    shards: DistEnv | None = None,
) -> BuildResult | None:
    """Embed the images of ``table`` (columns path, pid, camid, ...) into the index directory ``out`` with
    ``model``: a loaded checkpoint in ``mode`` (default fused) or an embedder (e.g. an exported ONNX file's),
    as ``job`` says (batches, workers, chunks).

    New index: laid out as ``spec`` says (:class:`reidx.gallery.IndexSpec`), its vectors where ``store`` says
    (a backend of :mod:`reidx.gallery` and its options; the default FAISS). ``append``: add to the index in
    ``out`` (same fingerprint, type and backend), skipping paths it already holds. Embeddings are kept in
    ``out/.partial`` until the index is written, so re-running an interrupted call resumes; the directory is
    replaced in one rename at the end, so a failure leaves any existing index as it was.

    ``shards`` (under ``torchrun``): every rank embeds its share (:mod:`reidx.retrieval.shards`), rank 0
    writes the one index and gets the result; the other ranks get None.
    """
    embedder = as_embedder(model, mode)
    out = Path(out)
    sharded = shards is not None and shards.enabled
    state_dir = out / PARTIAL_NAME
    if sharded:
        from reidx.retrieval.shards import embed_shards, share_paths

        if not shards.is_main:  # embed the share rank 0 sends; rank 0 alone checks, writes and reports
            paths = share_paths(shards)
            if paths:
                embed_shards(shards, embedder, paths, state_dir, job)
            return None
    with exclusive_lock(out, "index"):
        try:
            plan = BuildPlan.of(embedder, table, out, spec, store, append, overwrite)
        except BaseException:
            if sharded:
                share_paths(shards, None)  # the other ranks stop; this one reports
            raise
        paths = list(plan.rows["path"])
        if sharded:
            share_paths(shards, paths)
        if not paths and not needs_refresh(plan.existing, spec):
            return BuildResult(out, plan.existing.header, 0, plan.skipped)
        if not paths:
            chunks: list[Path] = []
        elif sharded:
            chunks = embed_shards(shards, embedder, paths, state_dir, job)
        else:
            chunks = embed_to_chunks(embedder, paths, state_dir, job)
        header, metadata = plan.contents(embedder, chunks)
        check_chunks(chunks, paths)  # the one gate every backend's vectors pass
        graph = graph_to_write(plan.existing, spec, new_vectors(chunks, header.dim), state_dir)
        extra = None if graph is None else (lambda folder: graph.save(folder / RERANK_NAME))
        write = GalleryWrite(out, header, plan.existing, metadata, chunks, devices, plan.record, extra)
        backend_class(plan.record.backend).write(write)
        return BuildResult(out, header, len(plan.rows), plan.skipped)


@dataclass
class BuildPlan:
    """What one ``build_index`` call adds, decided (and refused) before any image is embedded: the rows to
    embed (those ``existing`` lacks), how many were already indexed, where the vectors go, the index type
    and, for a new ivfpq index, its lists."""

    spec: IndexSpec
    fingerprint: dict[str, Any]
    existing: Gallery | None
    record: BackendRecord
    rows: pd.DataFrame
    skipped: int
    kind: str
    nlist: int

    @classmethod
    def of(
        cls,
        embedder: Embedder,
        table: pd.DataFrame,
        out: Path,
        spec: IndexSpec,
        store: StoreRequest,
        append: bool,
        overwrite: bool,
    ) -> BuildPlan:
        fingerprint = embedder.fingerprint()
        existing = existing_index(out, append, overwrite)
        if existing is not None:
            check_compatible(existing, fingerprint, spec, store.backend)
            store.check_appending()
            if spec.rerank_graph:
                gallery_vectors(existing, "--rerank-graph")  # refused before any image is embedded
        record = existing.record if existing is not None else store.new_record(out)
        known = set(existing.metadata["path"]) if existing is not None else set()
        rows = table[~table["path"].isin(known)].drop_duplicates("path").reset_index(drop=True)
        if rows.empty and existing is None:
            raise ReidxError("no images to embed", "give images, folders or a --dataset")
        kind = existing.header.index_type if existing is not None else spec.index_type or "flat"
        spec.check_layout(kind, backend_class(record.backend), len(rows))
        nlist = ivf_lists(len(rows), spec.nlist) if existing is None and kind == "ivfpq" else spec.nlist
        return cls(spec, fingerprint, existing, record, rows, len(table) - len(rows), kind, nlist)

    def contents(self, embedder: Embedder, chunks: Sequence[Path]) -> tuple[IndexHeader, pd.DataFrame]:
        """The header and whole metadata of the index once the rows are embedded into ``chunks``."""
        paths = list(self.rows["path"])
        if self.existing is None:
            dim = int(np.load(chunks[0], mmap_mode="r").shape[1])
            source = str(embedder.source.resolve())
            params = self.spec.layout_params(dim, self.kind, self.nlist)
            header = IndexHeader(self.fingerprint, source, embedder.model_name, dim, 0, self.kind, params)
            header.image_roots = image_folders(paths)
            return header, self.rows
        existing = self.existing
        header = replace(existing.header, image_roots=image_folders(paths, existing.header.image_roots))
        metadata = pd.concat([existing.metadata.convert_dtypes(), self.rows.convert_dtypes()], ignore_index=True)
        return header, metadata


def new_vectors(chunks: Sequence[Path], dim: int) -> np.ndarray:
    """The embeddings of ``chunks``, in order, as one (rows, dim) float32 array."""
    return np.concatenate([np.zeros((0, dim), np.float32), *(np.load(chunk) for chunk in chunks)])


def image_folders(paths: Iterable[str], known: Sequence[str] = ()) -> list[str]:
    """The folders holding ``paths``, symlinks resolved, with the ``known`` ones, none inside another: the
    image roots a header records, the only places ``reidx serve`` hands gallery images out from."""
    folders = {*known, *(os.path.dirname(os.path.realpath(path)) for path in paths)}
    kept: set[str] = set()
    for folder in sorted(folders):  # a folder sorts before the folders inside it
        if not any(str(parent) in kept for parent in Path(folder).parents):
            kept.add(folder)
    return sorted(kept)


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


def check_compatible(existing: Gallery, fingerprint: dict[str, Any], spec: IndexSpec, backend: str | None) -> None:
    """Refuse to append embeddings of another model, mode or input size, into another index type or
    ``backend``, with layout options (``--on-disk``, ``--reduce-dim``: the index keeps its own), or to an
    on-disk index."""
    index_type = spec.index_type
    if spec.shapes_layout:
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
