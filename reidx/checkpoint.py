"""Checkpoint files: plain tensors and Python types only, written atomically, read with weights_only=True.

Layout of a checkpoint dict:
``{"format": "reidx-checkpoint", "version": 1, "model_config": {...}, "input_size": [H, W],
"model": state_dict, "train": {...}}`` where ``model_config`` rebuilds the network with
:func:`reidx.models.build_model` and ``train`` (optional) holds optimiser, scheduler, RNG and run state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidx.errors import ReidxError
from reidx.io import atomic_path, sha256_file
from reidx.models import build_model

FORMAT = "reidx-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: nn.Module, input_size: tuple[int, int], **extra: Any) -> None:
    """Write ``model`` (its ``config`` and weights) plus ``extra`` entries (e.g. ``train``) atomically."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dict(model.config),
        "input_size": list(input_size),
        "model": model.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True); unusable files raise ReidxError."""
    path = Path(path)
    if not path.is_file():
        raise ReidxError(f"checkpoint not found: {path}", "pass the .pt file written by `reidx train` (RUN/last.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every load failure is a corrupt or foreign file to the user
        reason = str(exc).splitlines()[0][:200]
        raise ReidxError(
            f"cannot read checkpoint {path}: {reason}", "it is corrupt or not a reidx checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ReidxError(f"{path} is not a reidx checkpoint", "pass the .pt file written by `reidx train`")
    return state


@dataclass
class LoadedModel:
    """A network ready for inference, with what is needed to use it exactly as it was trained."""

    model: nn.Module
    model_config: dict[str, Any]
    input_size: tuple[int, int]
    fingerprint: str
    path: Path

    @property
    def name(self) -> str:
        return self.model_config["name"]


def model_from_state(state: dict[str, Any], path: Path) -> nn.Module:
    """Rebuild the network described by a checkpoint and load its weights (architecture mismatch = error)."""
    model = build_model(**state["model_config"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise ReidxError(f"{path} does not match its own model config: {first}", "the file is damaged") from None
    return model


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a checkpoint for inference (eval mode, on ``device``); fingerprint = SHA-256 of the file."""
    path = Path(path)
    state = read_checkpoint(path)
    model = model_from_state(state, path).to(device).eval()
    return LoadedModel(model, dict(state["model_config"]), tuple(state["input_size"]), sha256_file(path), path)
