"""Checkpoint files: plain tensors and Python types only, written atomically, read once with weights_only=True.

Layout of a checkpoint dict:
``{"format": "reidx-checkpoint", "version": 2, "model_config": {...}, "input_size": [H, W],
"model": state_dict, "meta": {...}, "train": {...}}`` where ``model_config`` rebuilds the network with
:func:`reidx.models.build_model` (:mod:`reidx.models.loading` builds it and checks the weights against it),
``meta`` says what the weights were trained with and on (``train_config``, ``dataset`` =
:func:`reidx.data.manifest.dataset_identity`, ``trial``, ``epoch``; version 1 files have none) and ``train``
(``last.pt`` and ``epoch_N.pt`` only) holds optimiser, scheduler, RNG and run state.

This module reads, checks and hashes; it imports neither the models nor (until a tensor is read or written)
torch.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidx.errors import ReidxError, one_line
from reidx.fingerprints import recall, remember, stat_key
from reidx.io import atomic_path

if TYPE_CHECKING:  # torch is imported where a tensor is read or written: an ONNX query never needs it
    import torch
    from torch import nn

FORMAT = "reidx-checkpoint"
VERSION = 2
#: Versions this reidx reads (1: no ``meta``).
READABLE = (1, 2)
NOT_OURS = "pass a .pt file written by `reidx train` (RUN/last.pt or RUN/best.pt)"
ZIP_MAGIC = b"PK\x03\x04"


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    input_size: tuple[int, int],
    meta: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Write ``model`` (its ``config`` and weights), ``meta`` and ``extra`` entries (e.g. ``train``) atomically."""
    import torch

    state = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dict(model.config),
        "input_size": list(input_size),
        "model": model.state_dict(),
        "meta": dict(meta or {}),
        **extra,
    }
    with atomic_path(path, "checkpoint") as tmp:
        torch.save(state, tmp)


@dataclass
class LoadedModel:
    """A network ready for inference, with what is needed to use it exactly as it was trained."""

    model: nn.Module
    model_config: dict[str, Any]
    input_size: tuple[int, int]
    fingerprint: str
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.model_config["name"]


@dataclass
class CheckpointFile:
    """One checkpoint read once: its ``meta``, the SHA-256 of its bytes and the whole checked ``state``."""

    path: Path
    meta: dict[str, Any]
    fingerprint: str
    state: dict[str, Any]

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.state["model_config"])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.state["input_size"])

    @property
    def train_config(self) -> dict[str, Any]:
        """The trainer's options (``meta``, or a version 1 ``last.pt``'s training state); empty if unknown."""
        config = self.meta.get("train_config") or (self.state.get("train") or {}).get("config")
        return dict(config) if isinstance(config, dict) else {}


def open_checkpoint(path: str | os.PathLike, lazy: bool = False) -> CheckpointFile:
    """Read, hash and load a checkpoint once (weights_only=True), its layout checked; any unusable file raises
    one ReidxError. Whether its weights fit the network it names is checked where the network is built
    (:func:`reidx.models.loading.open_model_checkpoint`).

    A file whose fingerprint :mod:`reidx.fingerprints` remembers (the same bytes, checked before) is not
    hashed or zip-checked again; ``lazy`` then maps it instead of reading it (for a caller that copies the
    weights into a model at once, as ``load_model`` does), so the training state is never read.
    """
    path = Path(path)
    if not path.is_file():
        raise not_found(path)
    try:
        key = stat_key(path)
        known = recall(path, key)
        if known is not None:
            state = _torch_load(str(path), path, mmap=lazy)
            if stat_key(path) != key:  # changed while being read: start again, the careful way
                known = None
        if known is None:
            data = path.read_bytes()
    except OSError as exc:
        raise ReidxError(f"cannot read checkpoint {path}: {exc.strerror}", "check the file's permissions") from None
    if known is None:
        state = _unpickle(data, path)
    _check_layout(state, path)
    meta = state.get("meta") or {}
    if known is None:
        known = hashlib.sha256(data).hexdigest()
        if stat_key(path) == key:
            remember(path, key, known)
    return CheckpointFile(path, dict(meta), known, state)


def not_found(path: str | os.PathLike) -> ReidxError:
    """The one "checkpoint not found" line (the CLI's path check and :func:`open_checkpoint` both raise it)."""
    return ReidxError(f"checkpoint not found: {path}", NOT_OURS)


def _unpickle(data: bytes, path: Path) -> Any:
    """The object in ``data``; empty, foreign, damaged, truncated and code-carrying files are ReidxErrors."""
    if not data:
        raise ReidxError(f"cannot read checkpoint {path}: the file is empty", "it was never written: " + NOT_OURS)
    if not data.startswith(ZIP_MAGIC):
        raise ReidxError(f"cannot read checkpoint {path}: it is not a PyTorch checkpoint file", NOT_OURS)
    try:
        damaged = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        damaged = "its index"
    if damaged is not None:
        raise ReidxError(
            f"cannot read checkpoint {path}: the file is truncated or damaged ({damaged} fails its check)",
            "copy it again, or use another checkpoint of the run (best.pt, epoch_N.pt)",
        )
    return _torch_load(io.BytesIO(data), path)


def _torch_load(source: str | io.BytesIO, path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint, its failures as ReidxErrors."""
    import torch

    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap or None)
    except pickle.UnpicklingError:
        raise ReidxError(
            f"{path} is not a reidx checkpoint: it holds Python objects other than tensors, which may run code "
            "when unpickled (reidx only loads tensors and plain values, never code)",
            NOT_OURS,
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other load failure is a damaged file to the user
        reason = one_line(exc, 120, keep="first")
        raise ReidxError(f"cannot read checkpoint {path}: the file is damaged ({reason})", NOT_OURS) from None


def _check_layout(state: Any, path: Path) -> None:
    """Refuse a dict that is not a reidx checkpoint, a newer version, or missing / mistyped entries."""
    import torch

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ReidxError(f"{path} is not a reidx checkpoint", NOT_OURS)
    if state.get("version") not in READABLE:
        raise ReidxError(
            f"{path} is a reidx checkpoint of version {state.get('version')!r}; this reidx reads {READABLE}",
            "use the reidx version that wrote it",
        )
    expected = {"model_config": dict, "input_size": list, "model": dict, "meta": dict, "train": dict}
    for key, kind in expected.items():
        optional = key in ("meta", "train")
        if key not in state and optional:
            continue
        if not isinstance(state.get(key), kind):
            found = "missing" if key not in state else f"a {type(state[key]).__name__}"
            raise ReidxError(
                f"{path} is damaged: its {key!r} entry should be a {kind.__name__}, found {found}", NOT_OURS
            )
    size = state["input_size"]
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ReidxError(f"{path} is damaged: input_size {size!r} is not [height, width]", NOT_OURS)
    if not isinstance(state["model_config"].get("name"), str):
        raise ReidxError(f"{path} is damaged: its model_config names no model", NOT_OURS)
    for name, tensor in state["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise ReidxError(f"{path} is damaged: weight {name!r} is a {type(tensor).__name__}", NOT_OURS)


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict differs from the one a network expects: names missing from it, names the network does
    not have, or (when the names agree) the first tensor of another shape: ``(name, given, expected)``."""

    missing: list[str]
    unexpected: list[str]
    shape: tuple[str, tuple[int, ...], tuple[int, ...]] | None = None


def state_mismatch(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> StateMismatch | None:
    """The one strict state-dict check (checkpoints, ImageNet weights): every expected tensor given (but those
    whose names end with one of ``optional``), nothing else, each of its expected shape; None when they fit."""
    missing = [name for name in expected if name not in given and not (optional and name.endswith(optional))]
    unexpected = [name for name in given if name not in expected]
    if missing or unexpected:
        return StateMismatch(missing, unexpected)
    for name, tensor in given.items():
        if tensor.shape != expected[name].shape:
            return StateMismatch([], [], (name, tuple(tensor.shape), tuple(expected[name].shape)))
    return None


def check_weights(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse ``weights`` with a missing, extra, mis-shaped or non-finite tensor for a network whose
    ``state_dict`` is ``expected``."""
    import torch

    mismatch = state_mismatch(expected, weights)
    if mismatch is not None and mismatch.shape is None:
        missing, extra = mismatch.missing, mismatch.unexpected
        what = f"lacks {missing[0]!r}" if missing else f"has an unexpected {extra[0]!r}"
        raise ReidxError(
            f"{source} does not match its model: it {what} ({len(missing) + len(extra)} tensor(s) differ)",
            "the file is damaged or from another reidx version",
        )
    if mismatch is not None and mismatch.shape is not None:
        name, shape, needed = mismatch.shape
        raise ReidxError(
            f"{source} does not match its model: tensor {name!r} has shape {shape}, the model needs {needed}",
            "the file is damaged or from another reidx version",
        )
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ReidxError(
                f"{source} holds non-finite weights (NaN or Inf) in {name!r}",
                "training diverged: use an earlier checkpoint of the run (epoch_N.pt) or retrain with a lower --lr",
            )


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy checked ``weights`` (:func:`check_weights`) into ``model``."""
    check_weights(model.state_dict(), weights, source)
    model.load_state_dict(weights)
