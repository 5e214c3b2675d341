"""Everything about a gallery: the index directory format (:mod:`~reidx.gallery.directory`), the layout of a new
index (:mod:`~reidx.gallery.layout`), the ranking rule and metadata filters every backend shares
(:mod:`~reidx.gallery.ranking`, :mod:`~reidx.gallery.filters`), and the backends holding the vectors (FAISS in
the folder, :mod:`~reidx.gallery.faiss`, or a Milvus collection, :mod:`~reidx.gallery.milvus`).

See :mod:`reidx.gallery.base` for the backend interface; each backend module registers itself in ``BACKENDS``.
Nothing here imports the layers above (``retrieval``, ``service``), nor torch at module level.
"""

from reidx.gallery.base import BACKENDS, Gallery, GalleryWrite, StoreRequest, backend_class, open_gallery_dir
from reidx.gallery.directory import DEFAULT_BACKEND, BackendRecord, IndexHeader
from reidx.gallery.filters import NO_FILTER, GalleryFilter
from reidx.gallery.layout import IndexSpec

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "NO_FILTER",
    "BackendRecord",
    "Gallery",
    "GalleryFilter",
    "GalleryWrite",
    "IndexHeader",
    "IndexSpec",
    "StoreRequest",
    "backend_class",
    "open_gallery_dir",
]
