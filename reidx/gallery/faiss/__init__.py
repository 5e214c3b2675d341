"""The FAISS backend (the default): the vectors in ``index.faiss`` inside the index directory.

:mod:`~reidx.gallery.faiss.index` holds the backend (:class:`FaissGallery`), :mod:`~reidx.gallery.faiss.exact`
the exact CPU search of a flat index, :mod:`~reidx.gallery.faiss.ondisk` IVF lists kept in a file and
:mod:`~reidx.gallery.faiss.devices` where an index runs (CPU, GPUs).
"""

from reidx.gallery.faiss.index import INDEX_NAME, LISTS_NAME, FaissGallery

__all__ = ["INDEX_NAME", "LISTS_NAME", "FaissGallery"]
