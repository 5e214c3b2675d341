"""``reidx export``: a checkpoint's whole embedding path as one ONNX graph with a dynamic batch axis.

The graph is pixels in [0, 1] → (x - 0.5) / 0.5 → the model's ``embed`` in one mode (the trunks' input
normalisation, E, G, F, pooling, fusion, L2 normalisation), traced by torch's TorchScript-based ONNX exporter
(opset 17). The dynamo exporter gives the same graph here but takes 10-40× longer per model. Before the file is
written, onnxruntime runs it on a few random images against torch: the export is refused unless every
embedding agrees (cosine ≥ :data:`MIN_COSINE`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reidx import __version__
from reidx.console import console, emit_json
from reidx.data.transforms import PIXEL_MEAN, PIXEL_STD
from reidx.device import Devices
from reidx.errors import ReidxError
from reidx.evaluation.embedders import TorchEmbedder
from reidx.export.metadata import FINGERPRINT_NAME, INPUT_NAME, OUTPUT_NAME, ExportInfo, fingerprint_bytes
from reidx.export.runtime import open_onnx
from reidx.io import atomic_path, exclusive_lock
from reidx.models.loading import load_model
from reidx.outputs import check_file_output

OPSET = 17
#: The agreement between onnxruntime's and torch's embeddings that an export must reach.
MIN_COSINE = 0.9999
#: The self-check's batches of random images (other sizes than the traced batch of 2: the dynamic axis).
CHECK_BATCHES = (1, 3)


class EmbeddingGraph(nn.Module):
    """The exported function: [0, 1] pixels to ``model.embed`` of the model-space input in ``mode``."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        self.model, self.mode = model, mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed((images - PIXEL_MEAN) / PIXEL_STD, self.mode)


@dataclass
class ExportResult:
    """What ``export_onnx`` wrote: the file, its info, its size and the self-check's lowest cosine."""

    path: Path
    info: ExportInfo
    bytes: int
    min_cosine: float

    def show(self, as_json: bool = False) -> None:
        """A one-line summary, or the result as JSON on stdout."""
        if as_json:
            fields = {"path": str(self.path), "bytes": self.bytes, "min_cosine": self.min_cosine}
            emit_json({**fields, "info": asdict(self.info)})
            return
        info = self.info
        console.print(
            f"{self.path}: {info.model} ({info.arch}) {info.mode} embedding, {info.dim}-d, input "
            f"{info.input_size[0]}x{info.input_size[1]}, {self.bytes / 2**20:.1f} MiB; onnxruntime matches torch "
            f"(lowest cosine {self.min_cosine:.7f})",
            highlight=False,
            soft_wrap=True,
        )


def export_onnx(checkpoint: str | Path, out: str | Path, mode: str = "fused", overwrite: bool = False) -> ExportResult:
    """Export ``checkpoint``'s ``mode`` embedding to the ONNX file ``out``, atomically; an existing ``out`` is
    replaced only when it is a reidx export and ``overwrite`` is given."""
    out = Path(out)
    check_file_output(out, "--out", "onnx", [checkpoint], overwrite)
    loaded = load_model(checkpoint, "cpu")
    embedder = TorchEmbedder.of(loaded, mode)
    with exclusive_lock(out, "ONNX file"):
        check_file_output(out, "--out", "onnx", [checkpoint], overwrite)  # again, now that it is ours
        proto, dim = trace(EmbeddingGraph(loaded.model, mode).eval(), loaded.input_size)
        bind(proto, embedder.fingerprint())
        info = ExportInfo(
            model=loaded.name,
            arch=str(loaded.model_config.get("arch", "")),
            mode=mode,
            input_size=tuple(loaded.input_size),
            dim=dim,
            input_norm=str(loaded.model_config["input_norm"]),
            checkpoint_sha256=loaded.fingerprint,
            checkpoint=loaded.path.name,
            graph_sha256=hashlib.sha256(proto.graph.SerializeToString()).hexdigest(),
            model_config=loaded.model_config,
        )
        for key, value in info.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        data = proto.SerializeToString()
        with atomic_path(out, "onnx") as tmp:
            tmp.write_bytes(data)
            cosine = self_check(tmp, embedder)
    return ExportResult(out, info, len(data), cosine)


def trace(graph: EmbeddingGraph, input_size: tuple[int, int]) -> tuple[Any, int]:
    """The ONNX model of ``graph`` for N×3×H×W pixels, N dynamic, and its embedding dimension (written into
    the output's shape, which the tracer leaves symbolic)."""
    import onnx

    example = torch.rand(2, 3, *input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )
        dim = int(graph(example).shape[1])
    proto = onnx.load_model_from_string(buffer.getvalue())
    proto.producer_name, proto.producer_version = "reidx", __version__
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim
    return proto, dim


def bind(proto: Any, fingerprint: dict[str, Any]) -> None:
    """Put the embedding fingerprint into the graph (:data:`FINGERPRINT_NAME`, covered by ``graph_sha256``), so
    that the metadata's claim can be checked against the graph (:mod:`reidx.export.metadata`)."""
    import onnx

    held = onnx.helper.make_tensor(FINGERPRINT_NAME, onnx.TensorProto.STRING, [1], [fingerprint_bytes(fingerprint)])
    proto.graph.initializer.append(held)


def self_check(path: Path, embedder: TorchEmbedder) -> float:
    """The lowest cosine between onnxruntime's embeddings (of the file at ``path``) and torch's on batches of
    random images; below :data:`MIN_COSINE` the export is refused."""
    generator = torch.Generator().manual_seed(0)
    onnx_embedder = open_onnx(path, embedder.mode, Devices("cpu"))
    cosines = []
    for batch in CHECK_BATCHES:
        images = torch.rand(batch, 3, *embedder.input_size, generator=generator) * 2 - 1
        got, want = onnx_embedder.embed_batch(images), embedder.embed_batch(images)
        cosines.append(np.sum(got * want, axis=1) if got.shape == want.shape else np.zeros(1))
    cosine = float(np.min(np.concatenate(cosines)))
    if not cosine >= MIN_COSINE:
        raise ReidxError(
            f"the ONNX graph disagrees with the checkpoint (cosine {cosine:.6f} < {MIN_COSINE})",
            "this is a bug in reidx export: please report it with the checkpoint's model config",
        )
    return cosine
