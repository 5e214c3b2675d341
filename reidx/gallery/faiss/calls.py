"""Wrappers of faiss calls that the index (:mod:`~reidx.gallery.faiss.index`) and its on-disk lists
(:mod:`~reidx.gallery.faiss.ondisk`) share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from reidx.io import WRITE_ERRORS


def pre_transformed(index: Any, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` through the pre-transform chain of an ``IndexPreTransform`` (unchanged for other indexes)."""
    import faiss

    if not isinstance(index, faiss.IndexPreTransform):
        return vectors
    for step in range(index.chain.size()):
        vectors = faiss.downcast_VectorTransform(index.chain.at(step)).apply(vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def write_faiss(index: Any, path: Path) -> None:
    """``faiss.write_index``, its write failures (reported in the message text) raised as OSError."""
    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as exc:
        code = next((code for code in WRITE_ERRORS if f"({os.strerror(code)})" in str(exc)), None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None
