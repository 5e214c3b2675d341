"""Index directories of given vectors in any backend, without a model: for the gallery tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reidx.device import Devices
from reidx.gallery import BackendRecord, Gallery, GalleryWrite, backend_class, open_gallery_dir
from reidx.gallery.milvus import default_collection
from reidx.retrieval.index import IndexHeader

FINGERPRINT = {"checkpoint_sha256": "0" * 64, "mode": "fused", "input_size": [64, 32]}
CPU = Devices("cpu")


def normalised(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def write_gallery(
    out: Path, vectors: np.ndarray, backend: str, uri: str, metadata: pd.DataFrame | None = None
) -> Gallery:
    """An index directory of ``vectors`` (one chunk file) in ``backend``, opened."""
    chunk = out.parent / f"{out.name}-chunk.npy"
    np.save(chunk, vectors)
    count, dim = vectors.shape
    if metadata is None:
        metadata = pd.DataFrame({"path": [f"img{i:04d}.png" for i in range(count)], "pid": -1, "camid": -1})
    header = IndexHeader(dict(FINGERPRINT), "model.pt", "baseline", dim, 0, "flat", {})
    record = BackendRecord() if backend == "faiss" else BackendRecord("milvus", uri, default_collection(out))
    backend_class(backend).write(GalleryWrite(out, header, None, metadata, [chunk], CPU, record))
    return open_gallery_dir(out, CPU)
