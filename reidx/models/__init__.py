"""Model registry: ``build_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

from torch import nn

from reidx.errors import ReidxError
from reidx.models.baseline import Baseline
from reidx.models.cadnet import CADNet

MODELS: dict[str, type[nn.Module]] = {"cadnet": CADNet, "baseline": Baseline}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODELS)


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered model; ``kwargs`` go to its constructor."""
    if name not in MODELS:
        raise ReidxError(f"unknown model {name!r}", f"use one of {', '.join(list_models())}")
    return MODELS[name](**kwargs)


__all__ = ["Baseline", "CADNet", "MODELS", "build_model", "list_models"]
