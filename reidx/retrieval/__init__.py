"""Retrieval: embed images into an index directory (``reidx embed``: :mod:`~reidx.retrieval.build` over the
resumable jobs of :mod:`~reidx.retrieval.jobs`) and search it (``reidx search``, ``reidx serve``:
:mod:`~reidx.retrieval.search`), whatever backend holds the vectors (:mod:`reidx.gallery`, below this layer).

Similarity is the inner product of L2-normalised embeddings, ties broken by gallery order, exactly as in
the evaluator (protocols.md §3). The names below are imported on first use, so that importing one module
of this package (e.g. the request objects the CLI builds its options from) imports no model code.
"""

from __future__ import annotations

from reidx.lazy import lazy_exports

#: Public name -> the module defining it.
_EXPORTS = {
    "BuildResult": "reidx.retrieval.build",
    "build_index": "reidx.retrieval.build",
    "embed_paths": "reidx.evaluation.embed",
    "gallery_table": "reidx.retrieval.inputs",
    "images_table": "reidx.retrieval.inputs",
    "draw_montage": "reidx.retrieval.montage",
    "EmbedJob": "reidx.retrieval.requests",
    "SearchRequest": "reidx.retrieval.requests",
    "Hit": "reidx.retrieval.search",
    "QueryResult": "reidx.retrieval.search",
    "rank_vectors": "reidx.retrieval.search",
    "search_images": "reidx.retrieval.search",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
