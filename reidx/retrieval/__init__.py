"""Retrieval: embed images into a FAISS index directory and search it (``reidx embed`` / ``reidx search``).

Similarity is the inner product of L2-normalised embeddings, ties broken by gallery order, exactly as in
the evaluator (protocols.md §3). FAISS is imported only when an index is built, opened or searched.
"""

from reidx.evaluation.embed import embed_paths
from reidx.evaluation.embedders import check_mode
from reidx.retrieval.build import BuildResult, build_index
from reidx.retrieval.filters import GalleryFilter
from reidx.retrieval.index import GalleryIndex, IndexHeader
from reidx.retrieval.inputs import dataset_table, expand_images, gallery_table, identity_from_name, images_table
from reidx.retrieval.jobs import embed_to_chunks, embedding_fingerprint
from reidx.retrieval.montage import draw_montage
from reidx.retrieval.search import Hit, QueryResult, load_gallery_model, rank_vectors, search_images

__all__ = [
    "BuildResult",
    "GalleryFilter",
    "GalleryIndex",
    "Hit",
    "IndexHeader",
    "QueryResult",
    "build_index",
    "check_mode",
    "dataset_table",
    "draw_montage",
    "embed_paths",
    "embed_to_chunks",
    "embedding_fingerprint",
    "expand_images",
    "gallery_table",
    "identity_from_name",
    "images_table",
    "load_gallery_model",
    "rank_vectors",
    "search_images",
]
