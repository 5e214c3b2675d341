"""Index directories of given vectors in any backend, without a model: for the gallery tests."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from reidx.device import Devices
from reidx.gallery import (
    BackendRecord,
    Gallery,
    GalleryWrite,
    IndexHeader,
    StoreRequest,
    backend_class,
    open_gallery_dir,
)

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
    backend_class(backend).write(GalleryWrite(out, header, None, metadata, [chunk], CPU, new_record(out, backend, uri)))
    return open_gallery_dir(out, CPU)


def new_record(out: Path, backend: str, uri: str) -> BackendRecord:
    """The record of a new gallery in ``out`` in ``backend``, its store at ``uri`` when the backend takes one."""
    takes_uri = "uri" in {spec.name for spec in fields(backend_class(backend).Options)}
    return StoreRequest(backend, {"uri": uri} if takes_uri else {}).new_record(out)
