"""The index directory: the one folder format every gallery backend shares, read and written here only.

An index directory holds

* ``header.json``: :class:`IndexHeader` (format, reidx version, the embedding fingerprint = checkpoint
  SHA-256 + mode + input size, the model file embedded with (``checkpoint``: a checkpoint or its
  ``reidx export`` ``.onnx`` file), model name, dim, metric, count, index type and params, and
  ``image_roots``: the folders, symlinks resolved, of the images embedded, the only places ``reidx serve``
  hands gallery images out from; absent in the headers of older reidx versions);
* ``metadata.parquet``: one row per vector (row i = vector id i): ``path`` (absolute), ``pid``, ``camid``
  and, for a dataset split, every other manifest column;
* ``backend.json``: :class:`BackendRecord`, where the vectors live; absent for the default backend (FAISS,
  whose files sit beside these: :mod:`reidx.gallery.faiss`);
* ``rerank.npz`` (optional, ``reidx embed --rerank-graph``): the gallery's own part of k-reciprocal
  re-ranking (:class:`reidx.retrieval.rerank.GalleryRerank`), with the fingerprint of the vectors it was
  built from; indexes without it read as before;
* ``.partial/`` (only while ``reidx embed`` runs or after it was interrupted): embedding chunks and the
  re-ranking graph's k-NN blocks, to resume;
* ``.reidx-output.json``: the marker of the safe-output rule (:mod:`reidx.outputs`).

Similarity is the inner product of L2-normalised embeddings (cosine), as in the evaluator (protocols.md §3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidx import __version__
from reidx.errors import ReidxError, one_line
from reidx.outputs import atomic_dir
from reidx.values import input_size_problem, is_count

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMAT = "reidx-index"
VERSION = 1
HEADER_NAME = "header.json"
METADATA_NAME = "metadata.parquet"
RECORD_NAME = "backend.json"
PARTIAL_NAME = ".partial"
RERANK_NAME = "rerank.npz"
METRIC = "inner_product"
INDEX_TYPES = ("flat", "ivfpq")
DEFAULT_BACKEND = "faiss"
#: The embedding fingerprint's fields (what makes two embeddings comparable) and their display names.
FINGERPRINT_KEYS = {"checkpoint_sha256": "checkpoint sha256", "mode": "mode", "input_size": "input size"}


def rebuild_hint(record: BackendRecord | None = None) -> str:
    """The one fix for a damaged or inconsistent index directory: the command that rebuilds it (with the
    options of its backend, when that is not the default)."""
    store = "" if record is None or record.backend == DEFAULT_BACKEND else f" --backend {record.backend} --uri URI"
    return f"rebuild it with `reidx embed ...{store} --out DIR --overwrite`"


def corrupt(record: BackendRecord | None = None) -> str:
    """The fix for a file of the directory that cannot be read."""
    return f"the file is corrupt; {rebuild_hint(record)}"


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


@dataclass(frozen=True)
class BackendRecord:
    """``backend.json``: the engine holding an index directory's vectors, its address and collection."""

    backend: str = DEFAULT_BACKEND
    uri: str = ""
    collection: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def fingerprint_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """A short description of how two embedding fingerprints differ (index vs new), None when they match."""
    differ = [key for key in FINGERPRINT_KEYS if expected[key] != actual[key]]
    short = {key: (str(expected[key])[:12], str(actual[key])[:12]) for key in differ}
    return "; ".join(f"{FINGERPRINT_KEYS[key]} {short[key][0]} vs {short[key][1]}" for key in differ) or None


def read_record(directory: Path) -> BackendRecord:
    """The backend record of an index directory (the default, FAISS, when it has none)."""
    path = directory / RECORD_NAME
    if not path.exists():
        return BackendRecord()
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        record = BackendRecord(**fields)
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise ReidxError(f"cannot read {path}: {one_line(exc)}", corrupt()) from None
    if not all(isinstance(value, str) for value in asdict(record).values()):
        raise ReidxError(f"cannot read {path}: its fields are not text", corrupt())
    return record


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
        raise ReidxError(f"cannot read {path}: {one_line(exc)}", corrupt()) from None
    problem = header_problem(fields)
    if problem:
        raise ReidxError(f"cannot read {path}: {problem}", corrupt())
    header = IndexHeader(**fields)
    if header.format != FORMAT or header.version != VERSION:
        raise ReidxError(f"{path} is not a version-{VERSION} reidx index header", rebuild_hint())
    if header.index_type not in INDEX_TYPES or header.metric != METRIC:
        raise ReidxError(f"{path}: unsupported index {header.index_type!r} / metric {header.metric!r}", rebuild_hint())
    return header


def check_header_model(header: IndexHeader, path: Path) -> None:
    """Refuse a header naming a model or mode this reidx does not have. The model registry imports torch, so this
    runs where a checkpoint is opened, or once an embedding fingerprint already disagrees (an ONNX query that
    succeeds never imports torch)."""
    from reidx.models import list_models, model_class

    if header.model not in list_models() or header.mode not in model_class(header.model).embedding_modes:
        raise ReidxError(f"cannot read {path}: model {header.model!r} has no embedding mode {header.mode!r}", corrupt())


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


def check_files(directory: Path, names: tuple[str, ...], record: BackendRecord | None = None) -> None:
    """Refuse an index directory lacking one of the files ``names``."""
    for name in names:
        if not (directory / name).is_file():
            raise ReidxError(f"index {directory} is incomplete: {name} is missing", rebuild_hint(record))


class MetadataColumns:
    """An index's checked ``metadata.parquet``, read with pyarrow alone: ``columns[name]`` is one column as numpy
    (what a query needs), :meth:`frame` the whole table in pandas, which is imported only then (importing it
    costs a one-query process about a quarter of a CPU-second: benchmarks/bench_coldstart.py)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._arrays: dict[str, np.ndarray] = {}
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = column_array(self.table.column(name))
        return self._arrays[name]

    def frame(self) -> pd.DataFrame:
        """The whole table as pandas reads it (``pd.read_parquet``)."""
        if self._frame is None:
            self._frame = self.table.to_pandas()
        return self._frame


def column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy: integers without empty values as int64 from their buffers, anything else as Python
    objects, None where empty (pyarrow's own ``to_numpy`` imports pandas)."""
    import pyarrow as pa

    if not pa.types.is_integer(column.type) or column.null_count:
        return np.array(column.to_pylist(), dtype=object)
    kind = np.dtype(str(column.type))
    parts = [
        np.frombuffer(chunk.buffers()[1], dtype=kind, count=len(chunk), offset=chunk.offset * kind.itemsize)
        for chunk in column.chunks
        if len(chunk)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def metadata_problem(table: pa.Table) -> str | None:
    """What is wrong with the columns of :data:`METADATA_COLUMNS` in ``table`` (missing, empty values, integers
    or text expected), None when nothing is; the parquet schema's own types are checked."""
    import pyarrow as pa

    missing = [name for name in METADATA_COLUMNS if name not in table.column_names]
    if missing:
        return f"columns {', '.join(missing)} are missing"
    for name, kind in METADATA_COLUMNS.items():
        column = table.column(name)
        if column.null_count:
            return f"column {name} has empty values"
        if kind is int and not pa.types.is_integer(column.type):
            return f"column {name} holds {column.type}, not integers"
        if kind is str and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return f"column {name} holds non-text values"
    return None


def read_metadata(directory: Path) -> MetadataColumns:
    """The checked ``metadata.parquet`` of an index directory; anything wrong is a one-line ReidxError. Read
    through ``pyarrow.parquet.ParquetFile``, which (unlike ``read_table``) does not import pandas."""
    import pyarrow.parquet as pq

    check_files(directory, (METADATA_NAME,))
    path = directory / METADATA_NAME
    try:
        table = pq.ParquetFile(path).read()
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file to the user
        raise ReidxError(f"cannot read {path}: {one_line(exc)}", corrupt()) from None
    problem = metadata_problem(table)
    if problem:
        raise ReidxError(f"cannot read {path}: {problem}", corrupt())
    return MetadataColumns(table)


def write_directory(
    out: Path,
    header: IndexHeader,
    metadata: pd.DataFrame,
    record: BackendRecord = BackendRecord(),
    vectors: Callable[[Path], None] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write an index directory into a fresh folder that then replaces ``out`` in one step (the caller has
    checked that ``out`` may be replaced): ``vectors(folder)`` writes the backend's own files (if any),
    ``extra(folder)`` the optional files (``rerank.npz``), then the metadata, the header and, for a backend
    other than the default, ``backend.json``."""
    with atomic_dir(out, "index", overwrite=True) as tmp:
        if vectors is not None:
            vectors(tmp)
        if extra is not None:
            extra(tmp)
        metadata.reset_index(drop=True).to_parquet(tmp / METADATA_NAME, index=False, engine="pyarrow")
        (tmp / HEADER_NAME).write_text(header.to_json())
        if record != BackendRecord():
            (tmp / RECORD_NAME).write_text(record.to_json())
