"""A network from a checkpoint: :mod:`reidx.checkpoint` reads, checks and hashes the file; here the model its
``model_config`` names is built and its weights are checked against that network, strictly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidx.checkpoint import CheckpointFile, LoadedModel, check_weights, open_checkpoint
from reidx.errors import ReidxError, one_line
from reidx.models.base import build_model, list_models


def open_model_checkpoint(path: str | os.PathLike, lazy: bool = False) -> CheckpointFile:
    """:func:`reidx.checkpoint.open_checkpoint`, then its weights checked against the network it names (an
    unknown model, or a missing, extra, mis-shaped or non-finite tensor, is one ReidxError)."""
    checkpoint = open_checkpoint(path, lazy)
    with torch.device("meta"):  # the network's tensor names and shapes, without allocating or initialising
        expected = _build(checkpoint.model_config, checkpoint.path).state_dict()
    check_weights(expected, checkpoint.state["model"], checkpoint.path)
    return checkpoint


def build_network(checkpoint: CheckpointFile) -> nn.Module:
    """The network a checkpoint opened by :func:`open_model_checkpoint` describes, with its weights (on the CPU,
    in train mode)."""
    model = _build(checkpoint.model_config, checkpoint.path)
    model.load_state_dict(checkpoint.state["model"])  # checked against this network by open_model_checkpoint
    return model


def load_model(source: str | os.PathLike | CheckpointFile, device: torch.device | str = "cpu") -> LoadedModel:
    """The network of a checkpoint (a path, read lazily, or an opened one) for inference: eval mode, on
    ``device``."""
    checkpoint = source if isinstance(source, CheckpointFile) else open_model_checkpoint(source, lazy=True)
    model = build_network(checkpoint).to(device).eval()
    return LoadedModel(
        model, checkpoint.model_config, checkpoint.input_size, checkpoint.fingerprint, checkpoint.path, checkpoint.meta
    )


def _build(model_config: dict[str, Any], path: Path) -> nn.Module:
    """The network ``model_config`` describes (untrained); a config this reidx cannot build is a ReidxError."""
    if model_config["name"] not in list_models():
        raise ReidxError(
            f"{path} holds an unknown model {model_config['name']!r}", "use the reidx version that wrote it"
        )
    try:
        return build_model(**model_config)
    except (TypeError, ValueError, KeyError, RuntimeError, OverflowError) as exc:  # e.g. num_classes -3
        reason = one_line(exc)
        raise ReidxError(
            f"{path} describes a model this reidx cannot build ({reason})", "use the reidx version that wrote it"
        ) from None
