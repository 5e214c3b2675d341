"""Gallery backends: where an index directory's vectors live (FAISS in the folder, or a Milvus collection).

See :mod:`reidx.gallery.base` for the interface; each backend module registers itself in ``BACKENDS``.
"""

from reidx.gallery.base import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendRecord,
    Gallery,
    GalleryWrite,
    backend_class,
    open_gallery_dir,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendRecord",
    "Gallery",
    "GalleryWrite",
    "backend_class",
    "open_gallery_dir",
]
