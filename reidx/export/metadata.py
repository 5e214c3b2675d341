"""What a ``reidx export`` ONNX file says about itself, in its ONNX ``metadata_props`` (string keys and values).

The graph takes ``images``: float32 N×3×H×W RGB pixels in [0, 1] (8-bit values / 255), each resized (bilinear)
to ``input_size`` = H×W; inside it the pixels are normalised to the model's [-1, 1] ((x - 0.5) / 0.5), then
converted as the trunks were trained (``input_norm``: ``imagenet`` or ``none``). It gives ``embedding``:
float32 N×D, rows L2-normalised, exactly ``reidx.evaluation.embed`` of the checkpoint in ``mode``.
``checkpoint_sha256`` is the SHA-256 of the checkpoint's bytes: an index built with the file has the same
embedding fingerprint as one built with the checkpoint. ``graph_sha256`` detects a damaged graph.

The claim is bound to the graph (format version 2): the graph itself holds the embedding fingerprint
(checkpoint SHA-256, mode, input size) as the JSON string initializer :data:`FINGERPRINT_NAME`, which
``graph_sha256`` covers, and a file is read only when that initializer says what the metadata says
(:func:`bound_problem`). So a file whose metadata was edited to claim another checkpoint (relabelled to pass
for that checkpoint's index) is refused, and so is one whose graph was swapped under intact metadata. This
detects relabelling and damage, not forgery: whoever rewrites the initializer and the hash together can claim
anything, as with any file that carries no signature. Version 1 files, which lack the binding, are refused
with the fix "export the checkpoint again".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidx import __version__
from reidx.data.transforms import PIXEL_MEAN, PIXEL_STD
from reidx.errors import ReidxError
from reidx.evaluation.embedders import fingerprint_of
from reidx.values import input_size_problem

FORMAT = "reidx-onnx"
VERSION = 2
#: The graph initializer holding the embedding fingerprint (a one-element string tensor of JSON).
FINGERPRINT_NAME = "reidx_fingerprint"
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
NOT_OURS = "export one with `reidx export --checkpoint RUN/best.pt --out FILE.onnx`"
#: The largest input side a file may claim (as for index headers).
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The metadata keys every export has, and what each value must parse to.
KEYS = (
    "reidx_format",
    "reidx_format_version",
    "reidx_version",
    "model",
    "arch",
    "mode",
    "input_size",
    "embedding_dim",
    "input",
    "pixel_mean",
    "pixel_std",
    "input_norm",
    "checkpoint_sha256",
    "checkpoint",
    "graph_sha256",
    "model_config",
)


@dataclass(frozen=True)
class ExportInfo:
    """The facts an export carries: the model, its embedding mode, input size and dimension, its input
    normalisation and the checkpoint it came from."""

    model: str
    arch: str
    mode: str
    input_size: tuple[int, int]
    dim: int
    input_norm: str
    checkpoint_sha256: str
    checkpoint: str
    graph_sha256: str
    model_config: dict[str, Any]

    def fingerprint(self) -> dict[str, Any]:
        """The embedding fingerprint the file claims (as ``Embedder.fingerprint``)."""
        return fingerprint_of(self.checkpoint_sha256, self.mode, self.input_size)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` of the file (every value a string; structured ones as JSON)."""
        from reidx.models.backbones import IMAGENET_MEAN, IMAGENET_STD  # writing: export has torch already

        height, width = self.input_size
        imagenet = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)} if self.input_norm == "imagenet" else {}
        return {
            "reidx_format": FORMAT,
            "reidx_format_version": str(VERSION),
            "reidx_version": __version__,
            "model": self.model,
            "arch": self.arch,
            "mode": self.mode,
            "input_size": json.dumps([height, width]),
            "embedding_dim": str(self.dim),
            "input": (
                f"{INPUT_NAME}: float32 N x 3 x {height} x {width}, RGB pixels / 255 in [0, 1], resized bilinear "
                f"to {height}x{width}; output {OUTPUT_NAME}: float32 N x {self.dim}, L2-normalised (cosine = dot)"
            ),
            "pixel_mean": str(PIXEL_MEAN),
            "pixel_std": str(PIXEL_STD),
            "input_norm": json.dumps({"name": self.input_norm, **imagenet}),
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint": self.checkpoint,
            "graph_sha256": self.graph_sha256,
            "model_config": json.dumps(self.model_config, sort_keys=True),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path) -> ExportInfo:
        """The info of a file's ``metadata_props``; a file reidx did not export, or whose metadata is damaged
        or from another format version, is a one-line ReidxError naming ``path``."""
        if props.get("reidx_format") != FORMAT:
            raise ReidxError(f"{path} is not a reidx export (its ONNX metadata has no reidx_format)", NOT_OURS)
        if props.get("reidx_format_version") != str(VERSION):
            raise ReidxError(
                f"{path} is a reidx export of format version {props.get('reidx_format_version')!r}; "
                f"this reidx reads {VERSION}",
                "export the checkpoint again with this reidx",
            )
        missing = [key for key in KEYS if key not in props]
        if missing:
            raise ReidxError(f"{path} is damaged: its metadata lacks {', '.join(missing)}", NOT_OURS)
        problem = props_problem(props)
        if problem:
            raise ReidxError(f"{path} is damaged: {problem}", NOT_OURS)
        height, width = json.loads(props["input_size"])
        return cls(
            model=props["model"],
            arch=props["arch"],
            mode=props["mode"],
            input_size=(height, width),
            dim=int(props["embedding_dim"]),
            input_norm=json.loads(props["input_norm"])["name"],
            checkpoint_sha256=props["checkpoint_sha256"],
            checkpoint=props["checkpoint"],
            graph_sha256=props["graph_sha256"],
            model_config=json.loads(props["model_config"]),
        )


def props_problem(props: dict[str, str]) -> str | None:
    """What is wrong with the values of a reidx export's metadata, None when nothing is. Read without the models
    (a query with an export imports no torch): the model and mode a file claims are bound to its graph
    (:func:`bound_problem`, which asks :func:`model_problem` once the binding fails)."""
    try:
        size = json.loads(props["input_size"])
        norm = json.loads(props["input_norm"])
        config = json.loads(props["model_config"])
    except (ValueError, RecursionError):
        return "its metadata holds malformed JSON"
    if problem := input_size_problem(size, "input_size"):
        return problem
    if not props["embedding_dim"].isdigit() or int(props["embedding_dim"]) < 1:
        return f"embedding_dim {props['embedding_dim'][:20]!r} is not a positive integer"
    if not isinstance(norm, dict) or not isinstance(norm.get("name"), str):
        return f"input_norm {props['input_norm'][:40]} names no input normalisation"
    if not isinstance(config, dict) or config.get("name") != props["model"]:
        return "its model_config does not describe its model"
    for key in ("checkpoint_sha256", "graph_sha256"):
        if not SHA256.match(props[key]):
            return f"{key} is not a SHA-256"
    if (props["pixel_mean"], props["pixel_std"]) != (str(PIXEL_MEAN), str(PIXEL_STD)):
        return f"pixel normalisation {props['pixel_mean'][:10]}/{props['pixel_std'][:10]} is not reidx's"
    return None


def model_problem(info: ExportInfo) -> str | None:
    """The claimed model or mode this reidx does not have, None when it has them (the model registry imports
    torch: asked only once a file is already refused)."""
    from reidx.models import list_models, model_class

    if info.model not in list_models() or info.mode not in model_class(info.model).embedding_modes:
        return f"model {info.model[:40]!r} has no embedding mode {info.mode[:20]!r} in this reidx"
    return None


def fingerprint_bytes(fingerprint: dict[str, Any]) -> bytes:
    """The fingerprint as the graph holds it (sorted-key JSON)."""
    return json.dumps(fingerprint, sort_keys=True).encode()


def bound_problem(graph: Any, info: ExportInfo) -> str | None:
    """What is wrong with the fingerprint the graph holds (missing, malformed, or not what the metadata
    claims), None when it is the metadata's."""
    held = [tensor for tensor in graph.initializer if tensor.name == FINGERPRINT_NAME]
    if len(held) != 1 or len(held[0].string_data) != 1:
        return f"its graph holds no {FINGERPRINT_NAME} (the checkpoint it was exported from)"
    try:
        bound = json.loads(held[0].string_data[0])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"its graph's {FINGERPRINT_NAME} is not JSON"
    if held[0].string_data[0] != fingerprint_bytes(info.fingerprint()):
        sha = bound.get("checkpoint_sha256") if isinstance(bound, dict) else None
        return (
            f"its metadata claims checkpoint {info.checkpoint_sha256[:12]} ({info.mode}), but its graph was exported "
            f"from {str(sha)[:12]} ({bound.get('mode') if isinstance(bound, dict) else '?'}): it was relabelled"
        )
    return None
