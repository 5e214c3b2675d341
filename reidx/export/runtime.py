"""Run a ``reidx export`` ONNX file with onnxruntime: the file read and checked once, then an :class:`OnnxEmbedder`,
registered as the embedder of ``.onnx`` files (:func:`reidx.evaluation.embedders.open_embedder`). Neither this
module nor a query run with it imports torch.

An ONNX file holds no code (it is a protobuf graph, not pickled data), but one from elsewhere is still checked:
reidx metadata (:mod:`reidx.export.metadata`), the graph's SHA-256, the fingerprint bound into the graph (the
metadata's claim must be the graph's), its input and output shapes, no external data files. Anything wrong is
one line naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from reidx.console import err_console
from reidx.data.transforms import PIXEL_MEAN, PIXEL_STD
from reidx.device import AUTO, Devices, available_cpus
from reidx.errors import ReidxError, one_line
from reidx.evaluation.embedders import OPENERS, Embedder, as_embedder
from reidx.export.metadata import INPUT_NAME, NOT_OURS, OUTPUT_NAME, ExportInfo, bound_problem, model_problem
from reidx.fingerprints import recall, remember, stat_key

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
#: The suffix of the model files ``reidx export`` writes.
ONNX_SUFFIX = ".onnx"
#: ``ModelProto.graph``'s field number, and the byte sizes of protobuf's fixed-size wire types (64- and 32-bit).
GRAPH_FIELD = 7
FIXED_SIZES = {1: 8, 5: 4}
#: The :mod:`reidx.fingerprints` entry of an export's graph SHA-256 (not the whole file's).
GRAPH_PART = "graph"


class OnnxEmbedder(Embedder):
    """An exported embedding graph in an onnxruntime session (CUDA when asked for or, with ``--device auto``,
    when onnxruntime has its CUDA provider; else CPU); the loop's [-1, 1] batches (numpy: the loop decodes them
    without torch) are turned back into the graph's [0, 1] pixels."""

    runtime = "onnxruntime"
    takes_numpy = True

    def __init__(self, session: Any, info: ExportInfo, source: Path) -> None:
        self.session, self.info, self.source = session, info, source
        self.model_name, self.mode, self.input_size = info.model, info.mode, info.input_size
        self.checkpoint_sha256 = info.checkpoint_sha256

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == CUDA_PROVIDER else "cpu"

    def embed_batch(self, images: Any) -> np.ndarray:
        pixels = (np.asarray(images, dtype=np.float32) * PIXEL_STD + PIXEL_MEAN).astype(np.float32, copy=False)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


@functools.cache
def onnx_schema() -> Any:
    """onnx's protobuf classes (``onnx.onnx_ml_pb2``: ``ModelProto``, ``TensorProto``), read without importing
    the onnx package, whose own imports (ml_dtypes' numpy types) cost a one-image query most of a CPU-second
    (benchmarks/bench_coldstart.py). The same schema as onnx's: the file registers identical descriptors."""
    if "onnx" in sys.modules:
        return sys.modules["onnx"].onnx_ml_pb2
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ReidxError("reading an ONNX model needs the onnx package", "pip install onnx")
    location = Path(next(iter(spec.submodule_search_locations))) / "onnx_ml_pb2.py"
    schema_spec = importlib.util.spec_from_file_location("reidx_onnx_ml_pb2", location)
    if schema_spec is None or schema_spec.loader is None:
        raise ReidxError(f"the onnx package has no {location.name}", "reinstall onnx")
    schema = importlib.util.module_from_spec(schema_spec)
    schema_spec.loader.exec_module(schema)
    return schema


def read_export(path: str | Path) -> tuple[bytes, ExportInfo]:
    """The bytes and checked info of a ``reidx export`` file; a missing, foreign or damaged file is one line.
    The graph's SHA-256 that :mod:`reidx.fingerprints` remembers for these very bytes (the same stat key before
    and after reading them) is not computed again."""
    path = Path(path)
    if not path.is_file():
        raise ReidxError(f"model file not found: {path}", NOT_OURS)
    try:
        key = stat_key(path)
        data = path.read_bytes()
        unchanged = stat_key(path) == key
    except OSError as exc:
        raise ReidxError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
    if not data:
        raise ReidxError(f"cannot read {path}: the file is empty", NOT_OURS)
    try:
        proto = onnx_schema().ModelProto.FromString(data)
    except Exception:  # noqa: BLE001 - any parse failure means the file is not a (whole) ONNX model
        raise ReidxError(f"cannot read {path}: it is not an ONNX model, or it is damaged", NOT_OURS) from None
    info = ExportInfo.from_props({prop.key: prop.value for prop in proto.metadata_props}, path)
    known = recall(path, key, GRAPH_PART) if unchanged else None
    graph_hash = known or graph_sha256(data)
    problem = graph_problem(proto, info, graph_hash)
    if problem:
        raise ReidxError(f"{path} is damaged: {problem}", NOT_OURS)
    if known is None and unchanged and graph_hash is not None:
        remember(path, key, graph_hash, GRAPH_PART)
    return data, info


def message_fields(data: bytes | memoryview) -> list[tuple[int, memoryview]] | None:
    """The length-delimited fields of a serialized protobuf message, in order, as ``(field number, bytes)``
    (other wire types skipped); None when the bytes are not one well-formed message."""
    view, pos, found = memoryview(data), 0, []
    try:
        while pos < len(view):
            key, pos = varint(view, pos)
            kind = key & 7
            if kind == 2:
                size, pos = varint(view, pos)
                found.append((key >> 3, view[pos : pos + size]))
                pos += size
            elif kind in FIXED_SIZES:
                pos += FIXED_SIZES[kind]
            elif kind == 0:
                pos = varint(view, pos)[1]
            else:
                return None
    except IndexError:
        return None
    return found if pos == len(view) else None


def graph_sha256(data: bytes) -> str | None:
    """The SHA-256 of the graph's bytes as the file holds them (the ``graph`` field of the serialized
    ``ModelProto``, which ``reidx export`` wrote as ``graph.SerializeToString()``), found without serializing
    the parsed graph again; None when the file holds no graph, or more than one (protobuf would merge them)."""
    graphs = [value for number, value in message_fields(data) or () if number == GRAPH_FIELD]
    return hashlib.sha256(graphs[0]).hexdigest() if len(graphs) == 1 else None


def varint(view: memoryview, pos: int) -> tuple[int, int]:
    """The protobuf varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        byte = view[pos]
        value, shift, pos = value | (byte & 0x7F) << shift, shift + 7, pos + 1
        if byte < 0x80:
            return value, pos


def graph_problem(proto: Any, info: ExportInfo, graph_hash: str | None) -> str | None:
    """What is wrong with an export's graph (hash, external data, inputs and outputs), None when nothing is;
    ``graph_hash``: :func:`graph_sha256` of the file."""
    graph = proto.graph
    if graph_hash != info.graph_sha256:
        return "its graph does not match the graph_sha256 in its metadata"
    bound = bound_problem(graph, info)
    if bound:
        return model_problem(info) or bound
    tensors = [*graph.initializer, *(attr.t for node in graph.node for attr in node.attribute if attr.HasField("t"))]
    if any(tensor.data_location == onnx_schema().TensorProto.EXTERNAL for tensor in tensors):
        return "it refers to external data files (reidx exports hold their weights inside)"
    inputs = [value for value in graph.input if value.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or shape(inputs[0])[1:] != [3, *info.input_size]:
        return f"its graph does not take {INPUT_NAME} of N x 3 x {info.input_size[0]} x {info.input_size[1]}"
    if len(graph.output) != 1 or graph.output[0].name != OUTPUT_NAME or shape(graph.output[0])[1:] != [info.dim]:
        return f"its graph does not give {OUTPUT_NAME} of N x {info.dim}"
    return None


def shape(value: Any) -> list[int | None]:
    """The dims of a graph input or output (None for a symbolic one, such as the batch axis)."""
    dims = value.type.tensor_type.shape.dim
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in dims]


#: Fewer images than this (a few queries) are embedded with onnxruntime's basic graph optimisations only: the
#: extended ones cost the demo model about 0.13 CPU-second at start and save about 4 ms per image.
FEW_IMAGES = 32


@OPENERS.register(ONNX_SUFFIX)
def open_onnx(
    path: str | Path, mode: str | None = None, devices: Devices = AUTO, device: Any = None, images: int | None = None
) -> OnnxEmbedder:
    """The embedder of a ``reidx export`` file (its mode must be ``mode`` when one is given) for ``images``
    images (None: not known). ``device``, a torchrun rank's torch device, is not needed: that rank's GPU is the
    current CUDA device."""
    path = Path(path)
    options = session_options(images)
    loaded = remembered_session(path, options, devices)
    if loaded is None:
        data, info = read_export(path)
        loaded = new_session(data, path, options, devices), info
    embedder = OnnxEmbedder(*loaded, path)
    as_embedder(embedder, mode)  # the mode check
    return embedder


def session_options(images: int | None) -> Any:
    """onnxruntime's session options for embedding ``images`` images (None: not known)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    few = images is not None and images < FEW_IMAGES
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_BASIC if few else levels.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    # torch's thread count (onnxruntime's default, the physical cores, was slower here: benchmarks/bench_export.py),
    # and threads that sleep between runs instead of spinning, so the image-decoding workers keep their cores
    options.intra_op_num_threads = cpu_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def new_session(model: bytes | str, path: Path, options: Any, devices: Devices) -> Any:
    """An onnxruntime session of ``model`` (the file's bytes, or its path); a load failure is one line."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, options, providers=providers(devices))
    except Exception as exc:  # noqa: BLE001 - any onnxruntime load failure is an unusable file to the user
        raise ReidxError(f"onnxruntime cannot load {path}: {one_line(exc)}", NOT_OURS) from None


def remembered_session(path: Path, options: Any, devices: Devices) -> tuple[Any, ExportInfo] | None:
    """The session and info of an export whose graph SHA-256 :mod:`reidx.fingerprints` remembers under the
    file's stat key: those very bytes passed every check of :func:`read_export` when it was remembered, so
    onnxruntime loads the file itself (no copy of it in Python, no protobuf parse: a one-query process's saving,
    benchmarks/bench_coldstart.py) and the info comes from the session's metadata. None, for the full check,
    when nothing is remembered, the file changed meanwhile, or its metadata names another graph."""
    try:
        key = stat_key(path)
        known = recall(path, key, GRAPH_PART)
        if known is None:
            return None
        session = new_session(str(path), path, options, devices)
        if stat_key(path) != key:
            return None
        info = ExportInfo.from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    except (OSError, ReidxError):
        return None
    return (session, info) if info.graph_sha256 == known else None


def cpu_threads() -> int:
    """The CPU threads torch would use: ``OMP_NUM_THREADS`` when set, else the CPUs this process may run on."""
    cpus = available_cpus()
    text = os.environ.get("OMP_NUM_THREADS", "")
    return min(int(text), cpus) if text.isdigit() and int(text) > 0 else cpus


def providers(devices: Devices) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime's execution providers for ``devices``: CUDA first where onnxruntime has it, on this process's
    GPU (``LOCAL_RANK`` under torchrun), then the CPU; ``--device cuda`` without it is a note. Torch is never
    asked: an ONNX query runs without it."""
    import onnxruntime as ort

    if devices.name == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in ort.get_available_providers():
        return [(CUDA_PROVIDER, {"device_id": int(os.environ.get("LOCAL_RANK", "0"))}), CPU_PROVIDER]
    if devices.name == "cuda":
        err_console.print(
            "note: this onnxruntime has no CUDA provider, so the ONNX model runs on the CPU (install onnxruntime-gpu)",
            highlight=False,
        )
    return [CPU_PROVIDER]
