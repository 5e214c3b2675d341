"""Run a ``reidx export`` ONNX file with onnxruntime: the file read and checked once, then an :class:`OnnxEmbedder`;
:func:`open_embedder` opens any model file (an ONNX export or a checkpoint) as an embedder.

An ONNX file holds no code (it is a protobuf graph, not pickled data), but one from elsewhere is still checked:
reidx metadata (:mod:`reidx.export.metadata`), the graph's SHA-256, the fingerprint bound into the graph (the
metadata's claim must be the graph's), its input and output shapes, no external data files. Anything wrong is
one line naming the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidx.console import err_console
from reidx.data.transforms import PIXEL_MEAN, PIXEL_STD
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError, one_line
from reidx.evaluation.embedders import Embedder, TorchEmbedder, as_embedder
from reidx.export.metadata import INPUT_NAME, NOT_OURS, OUTPUT_NAME, ExportInfo, bound_problem
from reidx.models.loading import load_model

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
#: The suffix of the model files ``reidx export`` writes (any other model file is read as a checkpoint).
ONNX_SUFFIX = ".onnx"


class OnnxEmbedder(Embedder):
    """An exported embedding graph in an onnxruntime session (CUDA when torch uses a GPU and onnxruntime has
    its CUDA provider, else CPU); the loop's [-1, 1] batches are turned back into the graph's [0, 1] pixels."""

    runtime = "onnxruntime"

    def __init__(self, session: Any, info: ExportInfo, source: Path) -> None:
        self.session, self.info, self.source = session, info, source
        self.model_name, self.mode, self.input_size = info.model, info.mode, info.input_size
        self.checkpoint_sha256 = info.checkpoint_sha256

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == CUDA_PROVIDER else "cpu"

    def embed_batch(self, images: torch.Tensor) -> np.ndarray:
        pixels = (images.cpu().numpy() * PIXEL_STD + PIXEL_MEAN).astype(np.float32, copy=False)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


def read_export(path: str | Path) -> tuple[bytes, ExportInfo]:
    """The bytes and checked info of a ``reidx export`` file; a missing, foreign or damaged file is one line."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ReidxError(f"model file not found: {path}", NOT_OURS)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReidxError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
    if not data:
        raise ReidxError(f"cannot read {path}: the file is empty", NOT_OURS)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - any parse failure means the file is not a (whole) ONNX model
        raise ReidxError(f"cannot read {path}: it is not an ONNX model, or it is damaged", NOT_OURS) from None
    info = ExportInfo.from_props({prop.key: prop.value for prop in proto.metadata_props}, path)
    problem = graph_problem(proto, info)
    if problem:
        raise ReidxError(f"{path} is damaged: {problem}", NOT_OURS)
    return data, info


def graph_problem(proto: Any, info: ExportInfo) -> str | None:
    """What is wrong with an export's graph (hash, external data, inputs and outputs), None when nothing is."""
    import onnx

    graph = proto.graph
    if hashlib.sha256(graph.SerializeToString()).hexdigest() != info.graph_sha256:
        return "its graph does not match the graph_sha256 in its metadata"
    bound = bound_problem(graph, info)
    if bound:
        return bound
    tensors = [*graph.initializer, *(attr.t for node in graph.node for attr in node.attribute if attr.HasField("t"))]
    if any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in tensors):
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


def open_embedder(
    path: str | os.PathLike, mode: str | None = None, devices: Devices = AUTO, device: torch.device | None = None
) -> Embedder:
    """The embedder of a model file: a ``reidx export`` ``.onnx`` file (onnxruntime) or a checkpoint (torch, on
    ``device``, default ``devices.torch``; ``mode`` None: fused)."""
    path = Path(path)
    if path.suffix.lower() == ONNX_SUFFIX:
        return open_onnx(path, mode, devices)
    return TorchEmbedder.of(load_model(path, device or devices.torch), mode or "fused")


def open_onnx(path: str | Path, mode: str | None = None, devices: Devices = AUTO) -> OnnxEmbedder:
    """The embedder of a ``reidx export`` file (its mode must be ``mode`` when one is given)."""
    import onnxruntime as ort

    path = Path(path)
    data, info = read_export(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    # torch's thread count (onnxruntime's default, the physical cores, was slower here: benchmarks/bench_export.py),
    # and threads that sleep between runs instead of spinning, so the image-decoding workers keep their cores
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(data, options, providers=providers(devices))
    except Exception as exc:  # noqa: BLE001 - any onnxruntime load failure is an unusable file to the user
        reason = one_line(exc)
        raise ReidxError(f"onnxruntime cannot load {path}: {reason}", NOT_OURS) from None
    embedder = OnnxEmbedder(session, info, path)
    as_embedder(embedder, mode)  # the mode check
    return embedder


def providers(devices: Devices) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime's execution providers for ``devices``: CUDA first, on torch's GPU (a torchrun rank's own),
    where torch uses one and onnxruntime has it (a note says when it does not), then the CPU."""
    import onnxruntime as ort
    import torch

    if devices.name == "cpu" or devices.torch.type != "cuda":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in ort.get_available_providers():
        gpu = devices.torch.index if devices.torch.index is not None else torch.cuda.current_device()
        return [(CUDA_PROVIDER, {"device_id": gpu}), CPU_PROVIDER]
    err_console.print(
        "note: this onnxruntime has no CUDA provider, so the ONNX model runs on the CPU (install onnxruntime-gpu)",
        highlight=False,
    )
    return [CPU_PROVIDER]
