"""The gallery index directory and the FAISS indexes inside it.

An index directory holds

* ``header.json``: :class:`IndexHeader` (format, reidx version, the embedding fingerprint = checkpoint
  SHA-256 + mode + input size, the model file embedded with (``checkpoint``: a checkpoint or its
  ``reidx export`` ``.onnx`` file), model name, dim, metric, count, index type and params, and
  ``image_roots``: the folders, symlinks resolved, of the images embedded, the only places ``reidx serve``
  hands gallery images out from; absent in the headers of older reidx versions);
* ``index.faiss``: the FAISS index (always written from a CPU copy), id i = row i of the metadata;
* ``metadata.parquet``: one row per vector: ``path`` (absolute), ``pid``, ``camid`` and, for a dataset
  split, every other manifest column;
* ``.partial/`` (only while ``reidx embed`` runs or after it was interrupted): embedding chunks to resume;
* ``lists.ivfdata`` (``--on-disk`` IVF-PQ only): the inverted lists, memory-mapped at search time;
* ``.reidx-output.json``: the marker of the safe-output rule (:mod:`reidx.outputs`).

Similarity is the inner product of L2-normalised embeddings (cosine), as in the evaluator
(protocols.md §3). Index types: ``flat`` (``IndexFlatIP``, exact) and ``ivfpq`` (``IndexIVFPQ``, trained on
the gallery, approximate). FAISS is imported lazily; indexes go to every GPU FAISS sees unless the device
is ``cpu``. On the CPU a flat index is searched by torch matmul over the vectors it stores
(:mod:`reidx.retrieval.exact`: faster than FAISS's own exhaustive search on few cores, same tie rule).
Params ``reduce_dim`` (a PCA to that many dimensions, then L2 normalisation, inside the index: queries
keep the embedding's dim) and ``on_disk`` (IVF-PQ lists in a file) are recorded in the header.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidx import __version__
from reidx.console import err_console
from reidx.data.manifest import column_problem
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError, one_line
from reidx.io import WRITE_ERRORS
from reidx.outputs import atomic_dir
from reidx.retrieval.exact import exact_top_k, longest_row, ranked
from reidx.values import input_size_problem, is_count

FORMAT = "reidx-index"
VERSION = 1
HEADER_NAME = "header.json"
INDEX_NAME = "index.faiss"
METADATA_NAME = "metadata.parquet"
#: The inverted lists of an ``--on-disk`` IVF-PQ index (``faiss.OnDiskInvertedLists``), beside INDEX_NAME.
LISTS_NAME = "lists.ivfdata"
PARTIAL_NAME = ".partial"
METRIC = "inner_product"
INDEX_TYPES = ("flat", "ivfpq")
#: Bits per PQ sub-vector code (256 centroids per sub-quantizer).
PQ_BITS = 8
#: FAISS warns below 39 training points per k-means centroid; reidx refuses below it.
MIN_POINTS_PER_CENTROID = 39
MIN_IVFPQ_VECTORS = MIN_POINTS_PER_CENTROID * 2**PQ_BITS
#: The embedding fingerprint's fields (what makes two embeddings comparable) and their display names.
FINGERPRINT_KEYS = {"checkpoint_sha256": "checkpoint sha256", "mode": "mode", "input_size": "input size"}
REBUILD = "rebuild it with `reidx embed ... --out DIR --overwrite`"


@dataclass
class IndexHeader:
    """The ``header.json`` of an index directory."""

    fingerprint: dict[str, Any]
    checkpoint: str
    model: str
    dim: int
    count: int
    index_type: str = "flat"
    params: dict[str, int] = field(default_factory=dict)
    metric: str = METRIC
    reidx_version: str = __version__
    format: str = FORMAT
    version: int = VERSION
    image_roots: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.fingerprint["mode"]

    @property
    def input_size(self) -> tuple[int, int]:
        height, width = self.fingerprint["input_size"]
        return height, width

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def fingerprint_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """A short description of how two embedding fingerprints differ (index vs new), None when they match."""
    differ = [key for key in FINGERPRINT_KEYS if expected[key] != actual[key]]
    short = {key: (str(expected[key])[:12], str(actual[key])[:12]) for key in differ}
    return "; ".join(f"{FINGERPRINT_KEYS[key]} {short[key][0]} vs {short[key][1]}" for key in differ) or None


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


def new_faiss_index(dim: int, index_type: str, params: dict[str, int]) -> Any:
    """An empty CPU index for normalised vectors under the inner product; ``params["reduce_dim"]`` puts a
    PCA to that many dimensions (then L2 normalisation) in front of it (``faiss.IndexPreTransform``)."""
    import faiss

    inner_dim = params.get("reduce_dim", dim)
    if index_type == "flat":
        index = faiss.IndexFlatIP(inner_dim)
    elif index_type == "ivfpq":
        quantizer = faiss.IndexFlatIP(inner_dim)
        index = faiss.IndexIVFPQ(
            quantizer, inner_dim, params["nlist"], params["pq_m"], PQ_BITS, faiss.METRIC_INNER_PRODUCT
        )
        index.nprobe = params["nprobe"]
    else:
        raise ReidxError(f"unknown index type {index_type!r}", f"use one of {', '.join(INDEX_TYPES)}")
    if inner_dim == dim:
        return index
    wrapped = faiss.IndexPreTransform(index)
    wrapped.prepend_transform(faiss.NormalizationTransform(inner_dim, 2.0))
    wrapped.prepend_transform(faiss.PCAMatrix(dim, inner_dim))
    return wrapped


def inner_index(index: Any) -> Any:
    """The index behind a (PCA) pre-transform, or the index itself."""
    import faiss

    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def pre_transformed(index: Any, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` through the pre-transform chain of an ``IndexPreTransform`` (unchanged for other indexes)."""
    import faiss

    if not isinstance(index, faiss.IndexPreTransform):
        return vectors
    for step in range(index.chain.size()):
        vectors = faiss.downcast_VectorTransform(index.chain.at(step)).apply(vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def index_bytes(index: Any) -> int:
    """About what a (CPU) index takes in memory: its vectors or codes and ids, and IVF centroids."""
    inner = inner_index(index)
    if not hasattr(inner, "nlist"):
        return inner.ntotal * inner.d * 4
    return inner.ntotal * (inner.code_size + 8) + inner.nlist * inner.d * 4


#: Share of the smallest GPU's free memory an index may take before it is sharded across the GPUs.
GPU_SHARE = 0.8


def shard_across_gpus(size: int, free: list[int]) -> bool:
    """Whether an index of ``size`` bytes is split across the GPUs (free bytes each) rather than copied to
    each: only when it does not fit ``GPU_SHARE`` of the smallest one and there are several."""
    return len(free) > 1 and size > GPU_SHARE * min(free)


def gpu_free_bytes(count: int) -> list[int]:
    """Free memory of each of the first ``count`` CUDA devices (torch's view, the GPUs FAISS sees)."""
    import torch

    return [torch.cuda.mem_get_info(device)[0] for device in range(count)]


def to_device(index: Any, devices: Devices) -> tuple[Any, bool]:
    """``(index, on_gpu)``: the index cloned to every GPU FAISS sees, or sharded across them when it does
    not fit one (:func:`shard_across_gpus`), when ``devices.faiss_gpu`` (not run on a GPU in reidx's tests)."""
    import faiss

    if not devices.faiss_gpu:
        return index, False
    options = faiss.GpuMultipleClonerOptions()
    # float16 lookup tables let a large pq_m fit the GPU's shared memory; flat vectors stay float32 (exact)
    options.useFloat16 = isinstance(inner_index(index), faiss.IndexIVFPQ)
    # an index too large for one GPU is split across them (each searches its part, results merged)
    options.shard = shard_across_gpus(index_bytes(index), gpu_free_bytes(faiss.get_num_gpus()))
    try:
        return faiss.index_cpu_to_all_gpus(index, co=options), True
    except RuntimeError as exc:  # e.g. a PQ layout the GPU kernels do not support
        reason = one_line(exc, keep="last")
        if devices.name == "cuda":
            raise ReidxError(f"FAISS cannot put this index on the GPU: {reason}", "use --device cpu") from None
        err_console.print(f"note: the index stays on the CPU (FAISS GPU: {reason})", highlight=False)
        return index, False


def to_cpu(index: Any, on_gpu: bool) -> Any:
    """A CPU copy of a (possibly GPU) index."""
    import faiss

    return faiss.index_gpu_to_cpu(index) if on_gpu else index


def set_nprobe(index: Any, nprobe: int, on_gpu: bool) -> None:
    """Set the number of inverted lists an IVF index visits per query."""
    import faiss

    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", nprobe)


def top_k(index: Any, queries: np.ndarray, k: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``total`` entries per query, equal to a stable descending sort of the similarity row.

    FAISS orders tied scores by descending id and, when a tie straddles the k-th place, keeps an
    arbitrary subset of it. So each row is fetched with one extra hit and :func:`ranked`; a row whose
    (k+1)-th score still equals its k-th is fetched again with twice as many hits until the tie ends.
    """
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    rows, fetch = np.arange(len(queries)), min(k + 1, total)
    while rows.size:
        found_scores, found_ids = ranked(*index.search(queries[rows], fetch))
        scores[rows], ids[rows] = found_scores[:, :k], found_ids[:, :k]
        if fetch == total:
            break
        tied = (found_ids[:, -1] >= 0) & (found_scores[:, -1] == found_scores[:, k - 1])
        rows, fetch = rows[tied], min(2 * fetch, total)
    return scores, ids


def checked_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """The query embeddings as contiguous float32 rows of an index's dimension ``dim`` (others refused)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ReidxError(
            f"query embeddings have shape {queries.shape}, the index holds {dim}-d vectors",
            "embed the queries with the index's model and mode",
        )
    return queries


def flat_vectors(index: Any) -> np.ndarray:
    """The (ntotal, d) float32 vectors a CPU ``IndexFlat`` stores, as a view (no copy; keep the index alive)."""
    import faiss

    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


@dataclass
class GalleryIndex:
    """An opened index directory: header, metadata and the FAISS index (on the GPU when available)."""

    directory: Path
    header: IndexHeader
    metadata: pd.DataFrame
    index: Any
    on_gpu: bool = False
    gallery_norm: float | None = field(default=None, repr=False)  # the longest stored vector (exact CPU search)

    def __len__(self) -> int:
        return self.header.count

    @classmethod
    def open(cls, directory: str | Path, devices: Devices = AUTO) -> GalleryIndex:
        """Read and validate an index directory; anything wrong is a one-line ReidxError."""
        import faiss

        from reidx.retrieval.ondisk import read_on_disk

        directory = Path(directory)
        header = read_header(directory)
        index_path, metadata_path = directory / INDEX_NAME, directory / METADATA_NAME
        on_disk = bool(header.params.get("on_disk"))
        for path in (index_path, metadata_path) + ((directory / LISTS_NAME,) if on_disk else ()):
            if not path.is_file():
                raise ReidxError(f"index {directory} is incomplete: {path.name} is missing", REBUILD)
        try:
            # on-disk inverted lists are memory-mapped from LISTS_NAME beside the index file
            index = read_on_disk(index_path) if on_disk else faiss.read_index(str(index_path))
        except RuntimeError as exc:
            reason = one_line(exc, keep="last")
            raise ReidxError(f"cannot read {index_path}: {reason}", f"the file is corrupt; {REBUILD}") from None
        metadata = read_metadata(directory)
        kind = faiss.IndexIVFPQ if header.index_type == "ivfpq" else faiss.IndexFlat
        inner = inner_index(index)
        reduced = inner.d if isinstance(index, faiss.IndexPreTransform) else None
        if (
            not isinstance(inner, kind)
            or reduced != header.params.get("reduce_dim")
            or inner.metric_type != faiss.METRIC_INNER_PRODUCT
            or not index.is_trained
        ):
            raise ReidxError(
                f"{index_path} is not the trained inner-product {header.index_type} index {HEADER_NAME} describes",
                f"the file is corrupt; {REBUILD}",
            )
        counts = {"header.json": header.count, INDEX_NAME: index.ntotal, METADATA_NAME: len(metadata)}
        if len(set(counts.values())) != 1 or index.d != header.dim:
            found = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise ReidxError(f"index {directory} is inconsistent (entries: {found}; dim {index.d})", REBUILD)
        # on-disk lists are for galleries larger than memory: they stay memory-mapped on the CPU
        index, on_gpu = to_device(index, Devices("cpu") if on_disk else devices)
        return cls(directory, header, metadata, index, on_gpu)

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (Q, min(k, len)), ranked by inner product, ties in gallery order.

        ``ids`` index the metadata rows; an approximate index may return fewer than k hits (id -1).
        """
        queries = checked_queries(queries, self.header.dim)
        k = max(1, min(k, self.header.count))
        if self.header.index_type == "flat" and not self.on_gpu and self.header.count:
            vectors = flat_vectors(inner_index(self.index))
            if self.gallery_norm is None:
                self.gallery_norm = longest_row(vectors)
            return exact_top_k(vectors, pre_transformed(self.index, queries), k, self.gallery_norm)
        if self.header.index_type == "ivfpq":
            set_nprobe(self.index, nprobe or self.header.params["nprobe"], self.on_gpu)
        return top_k(self.index, queries, k, self.header.count)


#: The type of every ``header.json`` field (bool is refused where an int is asked for).
HEADER_FIELDS: dict[str, type] = {
    "fingerprint": dict,
    "checkpoint": str,
    "model": str,
    "dim": int,
    "count": int,
    "index_type": str,
    "params": dict,
    "metric": str,
    "reidx_version": str,
    "format": str,
    "version": int,
    "image_roots": list,
}
#: Fields a header of an older reidx may lack (they take their defaults).
OPTIONAL_FIELDS = frozenset({"image_roots"})
IVFPQ_PARAMS = ("nlist", "pq_m", "nprobe")
#: The columns every metadata table has, and whether each holds text (path) or integers (pid, camid).
METADATA_COLUMNS = {"path": str, "pid": int, "camid": int}


def read_header(directory: Path) -> IndexHeader:
    """The header of an index directory, every field checked; anything wrong is a one-line ReidxError."""
    if not directory.is_dir():
        raise ReidxError(f"no index at {directory}", f"build one with `reidx embed --out {directory}`")
    path = directory / HEADER_NAME
    if not path.is_file():
        raise ReidxError(
            f"{directory} is not a reidx index (no {HEADER_NAME})",
            "point at a folder written by `reidx embed`",
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ReidxError(f"cannot read {path}: {one_line(exc)}", f"the file is corrupt; {REBUILD}") from None
    problem = header_problem(fields)
    if problem:
        raise ReidxError(f"cannot read {path}: {problem}", f"the file is corrupt; {REBUILD}")
    header = IndexHeader(**fields)
    if header.format != FORMAT or header.version != VERSION:
        raise ReidxError(f"{path} is not a version-{VERSION} reidx index header", REBUILD)
    if header.index_type not in INDEX_TYPES or header.metric != METRIC:
        raise ReidxError(f"{path}: unsupported index {header.index_type!r} / metric {header.metric!r}", REBUILD)
    return header


def check_header_model(header: IndexHeader, path: Path) -> None:
    """Refuse a header naming a model or mode this reidx does not have. The model registry imports torch, so this
    runs where a checkpoint is opened, or once an embedding fingerprint already disagrees (an ONNX query that
    succeeds never imports torch)."""
    from reidx.models import list_models, model_class

    if header.model not in list_models() or header.mode not in model_class(header.model).embedding_modes:
        raise ReidxError(
            f"cannot read {path}: model {header.model!r} has no embedding mode {header.mode!r}",
            f"the file is corrupt; {REBUILD}",
        )


def header_problem(fields: Any) -> str | None:
    """What is wrong with the parsed ``header.json`` (keys, types, ranges), None when nothing is."""
    if not isinstance(fields, dict):
        return f"it holds a JSON {type(fields).__name__}, not an object"
    missing = [key for key in HEADER_FIELDS if key not in fields and key not in OPTIONAL_FIELDS]
    unknown = sorted(set(fields) - set(HEADER_FIELDS))
    if missing:
        return f"missing {', '.join(missing)}"
    if unknown:
        return f"unknown {', '.join(unknown)}"
    for key, kind in HEADER_FIELDS.items():
        if key not in fields:
            continue
        value = fields[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key} is {json.dumps(value)[:40]}, not a JSON {kind.__name__}"
    if not is_count(fields["dim"], 1) or not is_count(fields["count"]):
        return f"dim {fields['dim']} / count {fields['count']} out of range"
    fingerprint = fields["fingerprint"]
    if set(fingerprint) != set(FINGERPRINT_KEYS) or not all(
        isinstance(fingerprint[key], str) for key in ("checkpoint_sha256", "mode")
    ):
        return "no valid embedding fingerprint"
    size = fingerprint["input_size"]
    if problem := input_size_problem(size):
        return problem
    roots = fields.get("image_roots", [])
    if not all(isinstance(root, str) and os.path.isabs(root) for root in roots):
        return f"image_roots {json.dumps(roots)[:60]} are not absolute folder paths"
    params = fields["params"]
    needed = IVFPQ_PARAMS if fields["index_type"] == "ivfpq" else ()
    if any(key not in params for key in needed) or not all(is_count(value, 1) for value in params.values()):
        return f"index params {json.dumps(params)[:60]} are not {', '.join(needed) or 'positive integers'}"
    return None


def read_metadata(directory: Path) -> pd.DataFrame:
    """The checked ``metadata.parquet`` of an index directory; anything wrong is a one-line ReidxError."""
    path = directory / METADATA_NAME
    if not path.is_file():
        raise ReidxError(f"index {directory} is incomplete: {path.name} is missing", REBUILD)
    try:
        metadata = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file to the user
        reason = one_line(exc)
        raise ReidxError(f"cannot read {path}: {reason}", f"the file is corrupt; {REBUILD}") from None
    problem = metadata_problem(metadata)
    if problem:
        raise ReidxError(f"cannot read {path}: {problem}", f"the file is corrupt; {REBUILD}")
    return metadata


def metadata_problem(metadata: pd.DataFrame) -> str | None:
    """What is wrong with the metadata table (columns, types, missing values), None when nothing is."""
    return column_problem(metadata, METADATA_COLUMNS)


def write_index_dir(
    directory: Path,
    header: IndexHeader,
    index: Any,
    metadata: pd.DataFrame,
    on_disk: Iterable[np.ndarray] | None = None,
) -> None:
    """Write the three files into a fresh folder that then replaces ``directory`` in one step (the
    caller has checked that ``directory`` may be replaced). ``on_disk``: vectors added to the trained,
    empty IVF ``index`` there, its inverted lists in LISTS_NAME (:mod:`reidx.retrieval.ondisk`)."""
    from reidx.retrieval.ondisk import write_on_disk

    with atomic_dir(directory, "index", overwrite=True) as tmp:
        if on_disk is None:
            write_faiss(index, tmp / INDEX_NAME)
        else:
            write_on_disk(index, on_disk, tmp / INDEX_NAME, tmp / LISTS_NAME)
        metadata.reset_index(drop=True).to_parquet(tmp / METADATA_NAME, index=False, engine="pyarrow")
        (tmp / HEADER_NAME).write_text(header.to_json())


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
