"""Pick the torch device from ``--device auto|cpu|cuda``."""

from __future__ import annotations

import torch

from reidx.errors import ReidxError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name not in DEVICE_CHOICES:
        raise ReidxError(f"unknown device {name!r}", f"use one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ReidxError("--device cuda was asked for but torch sees no GPU", "use --device cpu or auto")
    return torch.device(name)
