"""The gallery part of online re-ranking kept in an index folder (``rerank.npz``, written through
:func:`reidx.gallery.directory.write_directory`): built or kept exact by ``reidx embed --rerank-graph`` /
``--append``, and opened (checked against the index's vectors) by ``reidx search --rerank`` and ``serve``."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from reidx.errors import ReidxError
from reidx.evaluation.embed import progress_counter
from reidx.gallery import Gallery
from reidx.gallery.directory import RERANK_NAME
from reidx.gallery.layout import IndexSpec
from reidx.retrieval.rerank.graph import PUBLISHED, RerankParams
from reidx.retrieval.rerank.online import GalleryRerank
from reidx.retrieval.rerank.resume import KnnBlocks

#: Opened gallery parts, one per opened gallery (``serve`` reads it once, not per request).
_OPENED: weakref.WeakKeyDictionary[Gallery, GalleryRerank] = weakref.WeakKeyDictionary()


def rebuild_fix(directory: Path) -> str:
    return f"(re)build it: `reidx embed --checkpoint MODEL IMAGES --out {directory} --append --rerank-graph`"


def gallery_vectors(gallery: Gallery, why: str) -> np.ndarray:
    """The gallery's exact embeddings, refused in one line where its index does not keep them."""
    vectors = gallery.exact_vectors()
    if vectors is None:
        raise ReidxError(
            f"{why} reads the exact embeddings, and {gallery.directory} is a {gallery.header.index_type} "
            f"{gallery.record.backend} index{' with --reduce-dim' if gallery.header.params.get('reduce_dim') else ''}",
            "build a flat FAISS index (the default) for it",
        )
    return vectors


def _load(gallery: Gallery, vectors: np.ndarray) -> GalleryRerank:
    path = gallery.directory / RERANK_NAME
    if not path.is_file():
        raise ReidxError(f"{gallery.directory} has no re-ranking graph ({RERANK_NAME})", rebuild_fix(gallery.directory))
    try:
        return GalleryRerank.load(path, vectors)
    except ReidxError as error:  # damaged, or built from other vectors (another model, or before an append)
        problem = f"stale or damaged re-ranking graph: {error.message}"
        raise ReidxError(problem, rebuild_fix(gallery.directory)) from None


def graph_to_write(
    existing: Gallery | None, spec: IndexSpec, new_vectors: np.ndarray, state_dir: Path
) -> GalleryRerank | None:
    """The gallery part an ``embed`` writes beside the vectors (None: none). Asked for (``spec.rerank_graph``)
    or already in the index appended to: the stored one extended exactly with ``new_vectors``; a stored one
    that is damaged, stale or of other k1/k2 than asked for is recomputed from all the vectors, never trusted.
    Its k-NN pass keeps its blocks in the job's ``state_dir`` (:mod:`.resume`), with a progress bar."""
    stored = existing is not None and (existing.directory / RERANK_NAME).is_file()
    if not spec.rerank_graph and not stored:
        return None
    old = gallery_vectors(existing, "--rerank-graph") if existing is not None else new_vectors[:0]
    asked = RerankParams(spec.k1, spec.k2, PUBLISHED.lam) if spec.rerank_graph else None
    previous = None
    if stored:
        try:
            previous = _load(existing, old)
        except ReidxError:
            previous = None  # recomputed below
    extend = previous is not None and (asked is None or _same_lists(asked, previous.params))
    with progress_counter(len(old) + len(new_vectors), 0, "re-ranking graph", show=True) as advance:

        def passes(gallery: np.ndarray, queries: np.ndarray, k: int) -> KnnBlocks:
            return KnnBlocks(state_dir, gallery, queries, k, advance)

        if extend:
            return previous.append(new_vectors, passes)
        return GalleryRerank.build(np.concatenate([old, new_vectors]), asked or PUBLISHED, passes)


def _same_lists(asked: RerankParams, stored: RerankParams) -> bool:
    return (asked.k1, asked.k2) == (stored.k1, stored.k2)


def needs_refresh(existing: Gallery | None, spec: IndexSpec) -> bool:
    """Whether ``embed --rerank-graph --append`` with no new image must still (re)write the gallery part."""
    if existing is None or not spec.rerank_graph:
        return False
    try:
        stored = _load(existing, gallery_vectors(existing, "--rerank-graph"))
    except ReidxError:
        return True
    return (stored.params.k1, stored.params.k2) != (spec.k1, spec.k2)


def open_rerank(gallery: Gallery, k1: int | None, k2: int | None, lam: float) -> GalleryRerank:
    """The stored gallery part of ``gallery`` with λ = ``lam``, checked against its vectors; refused in one
    line when absent, stale, damaged, or built with other ``k1`` / ``k2`` (None: the stored ones)."""
    graph = _OPENED.get(gallery)
    if graph is None:
        graph = _OPENED[gallery] = _load(gallery, gallery_vectors(gallery, "--rerank"))
    stored = graph.params
    for name, asked, kept in (("k1", k1, stored.k1), ("k2", k2, stored.k2)):
        if asked is not None and asked != kept:
            raise ReidxError(
                f"--{name} {asked}: the re-ranking graph of {gallery.directory} was built with {name} {kept}",
                f"drop --{name}, or rebuild the graph with `reidx embed ... --append --rerank-graph --{name} {asked}`",
            )
    if lam == stored.lam:
        return graph
    params = RerankParams(stored.k1, stored.k2, lam)
    return GalleryRerank(params, graph.vectors, graph.graph, graph.index, graph.reverse)
