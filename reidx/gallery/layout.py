"""The layout of a new index (``reidx embed --index ...``): its type and parameters, checked before any image
is embedded and turned into the header's params once the embedding dimension is known."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reidx.errors import ReidxError
from reidx.gallery.directory import INDEX_TYPES
from reidx.options import option

if TYPE_CHECKING:
    from reidx.gallery.base import Gallery

#: Bits per PQ sub-vector code (256 centroids per sub-quantizer).
PQ_BITS = 8
#: FAISS warns below 39 training points per k-means centroid; reidx refuses below it.
MIN_POINTS_PER_CENTROID = 39
MIN_IVFPQ_VECTORS = MIN_POINTS_PER_CENTROID * 2**PQ_BITS


@dataclass(frozen=True)
class IndexSpec:
    """How a new index is laid out: ``index_type`` flat (exact) or ivfpq (approximate) with its parameters
    (0: automatic); FAISS only: ``on_disk`` keeps ivfpq's inverted lists in a file (galleries larger than
    memory), ``reduce_dim`` puts a PCA to that many dimensions in the index (trained on the gallery)."""

    index_type: str | None = option(None, "flat (exact, default) | ivfpq (approximate).", flag="--index")
    nlist: int = option(0, "ivfpq inverted lists (0: about 4·sqrt(N)).", minimum=0)
    pq_m: int = option(0, "ivfpq bytes per vector (0: auto; divides the dim).", minimum=0)
    nprobe: int = option(0, "ivfpq default lists visited per query (0: auto).", minimum=0)
    on_disk: bool = option(False, "ivfpq inverted lists in a file, memory-mapped (beyond RAM).")
    reduce_dim: int = option(0, "PCA to this many dimensions inside the index (0: none).", minimum=0)
    rerank_graph: bool = option(
        False,
        "Also store the gallery's part of k-reciprocal re-ranking (rerank.npz, for `search --rerank`; flat "
        "FAISS index); kept exact by --append; an interrupted build resumes its k-NN pass.",
    )
    k1: int = option(20, "--rerank-graph: k1, the k-reciprocal neighbours (published: 20).", minimum=1)
    k2: int = option(6, "--rerank-graph: k2, the query-expansion neighbours (published: 6).", minimum=1)

    def __post_init__(self) -> None:
        if self.index_type is not None and self.index_type not in INDEX_TYPES:
            raise ReidxError(f"unknown index type {self.index_type!r}", f"use one of {', '.join(INDEX_TYPES)}")

    @property
    def shapes_layout(self) -> bool:
        """Whether FAISS-only layout options (``--on-disk``, ``--reduce-dim``) were asked for."""
        return self.on_disk or bool(self.reduce_dim)

    def check_layout(self, kind: str, backend: type[Gallery], count: int) -> None:
        """Refuse ``--on-disk`` without ivfpq, either layout option for a backend without them, and a PCA with
        fewer training images (``count``) than dimensions."""
        if self.shapes_layout and not backend.tunes_layout:
            raise ReidxError(
                "--on-disk and --reduce-dim shape a FAISS index", f"drop them with --backend {backend.name}"
            )
        if self.rerank_graph and (kind != "flat" or self.reduce_dim or not backend.keeps_vectors):
            raise ReidxError(
                "--rerank-graph reads the exact embeddings: it needs a flat FAISS index without --reduce-dim",
                "drop --rerank-graph, or build a flat index (the default) with the default backend",
            )
        if self.on_disk and kind != "ivfpq":
            raise ReidxError(
                "--on-disk keeps IVF-PQ inverted lists in a file; a flat index has none", "add --index ivfpq"
            )
        if self.reduce_dim and count < self.reduce_dim:
            raise ReidxError(
                f"--reduce-dim {self.reduce_dim} needs at least {self.reduce_dim} images to train the PCA, "
                f"there are {count}",
                "use a smaller --reduce-dim or drop it",
            )

    def layout_params(self, dim: int, kind: str, nlist: int) -> dict[str, int]:
        """The header params of a new index of ``dim``-d embeddings with ``nlist`` lists (ivfpq): IVF-PQ's (for
        the reduced dim when there is a PCA), ``reduce_dim`` and ``on_disk`` when asked for."""
        if self.reduce_dim and self.reduce_dim >= dim:
            raise ReidxError(
                f"--reduce-dim {self.reduce_dim} is not below the embedding dimension {dim}", f"use fewer than {dim}"
            )
        params = ivfpq_params(self.reduce_dim or dim, nlist, self.pq_m, self.nprobe) if kind == "ivfpq" else {}
        return (
            params
            | ({"reduce_dim": self.reduce_dim} if self.reduce_dim else {})
            | ({"on_disk": 1} if self.on_disk else {})
        )


def ivf_lists(count: int, nlist: int = 0) -> int:
    """The number of inverted lists for ``count`` training vectors (0: about 4·sqrt(count), at most
    count / 39); galleries too small to train IVF-PQ are refused."""
    if count < MIN_IVFPQ_VECTORS:
        raise ReidxError(
            f"ivfpq needs at least {MIN_IVFPQ_VECTORS} gallery images to train, this gallery has {count}",
            "use --index flat (exact search, fast at this size)",
        )
    most = count // MIN_POINTS_PER_CENTROID
    if nlist > most:
        raise ReidxError(f"--nlist {nlist} is too many lists for {count} images", f"use --nlist {most} or fewer")
    return nlist or max(1, min(round(4 * math.sqrt(count)), most))


def ivfpq_params(dim: int, nlist: int, pq_m: int = 0, nprobe: int = 0) -> dict[str, int]:
    """Checked IVF-PQ parameters; 0 means automatic: pq_m = the largest divisor of dim up to
    min(64, dim / 4), nprobe = max(8, nlist / 16) (at most nlist)."""
    pq_m = pq_m or max(m for m in range(1, min(64, max(1, dim // 4)) + 1) if dim % m == 0)
    if dim % pq_m:
        raise ReidxError(f"--pq-m {pq_m} does not divide the embedding dimension {dim}", "pick a divisor of it")
    nprobe = min(nlist, nprobe or max(8, nlist // 16))
    return {"nlist": nlist, "pq_m": pq_m, "nprobe": nprobe}
