"""The request objects of ``reidx embed`` and ``reidx search``/``serve``: each field declares its flag
(:func:`reidx.options.option`), so the commands' options are generated from them (:mod:`reidx.cli_options`).
Light on purpose: the CLI imports this module to build its options, before any model or index is touched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reidx.gallery.filters import NO_FILTER, GalleryFilter
from reidx.options import option

#: At most this many seconds of embedding work are lost when a run is killed.
FLUSH_SECONDS = 10.0


@dataclass(frozen=True)
class EmbedJob:
    """How images are embedded: ``batch_size`` images per model batch, ``workers`` decoding processes; a chunk
    of vectors is written every ``chunk_size`` images or ``flush_seconds``, whichever comes first, and
    ``on_chunk(done)`` is called after each chunk is safely on disk (:func:`reidx.retrieval.jobs.embed_to_chunks`)."""

    batch_size: int = option(64, "Images per model batch.", minimum=1)
    workers: int = option(2, "Image-decoding worker processes.", minimum=0)
    chunk_size: int = 4096
    flush_seconds: float = FLUSH_SECONDS
    on_chunk: Callable[[int], None] | None = None


@dataclass(frozen=True)
class SearchRequest:
    """One search, the same for ``reidx search`` and ``reidx serve``: ``k`` hits per query (``nprobe`` ivfpq
    lists visited, default the header's), among the entries ``filters`` lets through; the queries' pid and
    camid (for the filters and the output) come from their names unless given. ``query_expansion`` K > 0
    replaces each query by its average with its K nearest gallery vectors first; ``rerank`` re-ranks with
    the index's stored gallery part (k1 / k2: the stored ones, ``lam``: λ), scores then being distances."""

    k: int = option(10, "Results per query.", flag="--top-k", minimum=1)
    nprobe: int | None = option(None, "ivfpq lists visited per query.", minimum=1)
    filters: GalleryFilter = NO_FILTER
    query_pid: int | None = option(None, "The queries' identity, for montage borders.")
    query_camid: int | None = option(None, "The queries' camid (default: from the name).", flag="--query-camera")
    rerank: bool = option(
        False,
        "k-reciprocal re-ranking, exact, on the gallery and each query (needs `embed --rerank-graph`); scores "
        "become re-ranked distances, lower is better.",
    )
    k1: int | None = option(None, "--rerank: k1 (default and only choice: the graph's, from embed).", minimum=1)
    k2: int | None = option(None, "--rerank: k2 (default and only choice: the graph's, from embed).", minimum=1)
    lam: float = option(
        0.3, "--rerank: weight of the original distance (published: 0.3).", flag="--lambda", minimum=0.0, maximum=1.0
    )
    query_expansion: int = option(
        0, "Average query expansion: each query averaged with its K nearest (0: off).", minimum=0, metavar="K"
    )
