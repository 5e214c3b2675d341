"""ImageNet weights for a trunk: from a file or torchvision's cache (never a download), loaded strictly.

Every trunk tensor must come from the file with its shape; the file's classifier tensors are dropped.
BatchNorm step counters (``num_batches_tracked``) may be absent: torchvision's older files predate them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reidx.checkpoint import FORMAT, state_mismatch
from reidx.errors import ReidxError

Pretrained = bool | str | os.PathLike
DOWNLOADS = "https://download.pytorch.org/models/"
COUNTER = "num_batches_tracked"
EXAMPLES = 3


@dataclass(frozen=True)
class WeightsLoad:
    """What a trunk took from an ImageNet file: ``loaded`` of its ``total`` tensors, ``dropped`` classifier ones."""

    path: str
    loaded: int
    total: int
    dropped: int

    def __str__(self) -> str:
        return f"loaded {self.loaded} of {self.total} ImageNet tensors from {self.path} (dropped {self.dropped})"


def weights_path(weights_file: str, pretrained: Pretrained) -> Path:
    """``pretrained`` itself, or (``True``) where torchvision's cache keeps ``weights_file``."""
    if pretrained is True:
        return Path(torch.hub.get_dir()) / "checkpoints" / weights_file
    return Path(pretrained)


def load_imagenet(net: nn.Module, arch: str, weights_file: str, pretrained: Pretrained, classifier: str) -> WeightsLoad:
    """Load ImageNet weights into ``net`` (a torchvision ``arch``); keys under ``classifier`` are not the trunk's."""
    path = weights_path(weights_file, pretrained)
    fix = f"pass torchvision's {weights_file} ({DOWNLOADS}{weights_file}) with --pretrained PATH, or --no-pretrained"
    state = read_state(path, arch, weights_file, fix)
    wanted = {key: value for key, value in net.state_dict().items() if not key.startswith(classifier)}
    given = {key: value for key, value in state.items() if not key.startswith(classifier)}
    mismatch = state_mismatch(wanted, given, optional=(COUNTER,))
    if mismatch is not None and mismatch.missing:
        raise ReidxError(f"{path} does not fit {arch}: it lacks {count(mismatch.missing, 'trunk tensor')}", fix)
    if mismatch is not None and mismatch.unexpected:
        foreign = count(mismatch.unexpected, "tensor")
        raise ReidxError(f"{path} does not fit {arch}: {foreign} that {arch} does not have", fix)
    if mismatch is not None and mismatch.shape is not None:
        key, shape, needed = mismatch.shape
        raise ReidxError(f"{path} does not fit {arch}: {key} is {shape} in the file, {needed} in {arch}", fix)
    net.load_state_dict(given, strict=False)  # strict in effect: every key and shape was checked above
    return WeightsLoad(str(path), len(given), len(wanted), len(state) - len(given))


def read_state(path: Path, arch: str, weights_file: str, fix: str) -> dict[str, torch.Tensor]:
    """The file's dict of tensors (weights_only); anything else is a one-line ReidxError."""
    if not path.is_file():
        raise ReidxError(f"ImageNet weights for {arch} are not on this machine ({path})", fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means an unusable weights file
        reason = "not a tensors-only PyTorch file, or damaged"
        raise ReidxError(f"cannot read ImageNet weights {path}: {reason}", fix) from None
    if isinstance(state, dict) and state.get("format") == FORMAT:
        raise ReidxError(f"{path} is a reidx checkpoint, not torchvision's ImageNet weights for {arch}", fix)
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())
    ):
        raise ReidxError(f"{path} is not a state dict of tensors (torchvision's {weights_file})", fix)
    return state


def count(keys: list[str], noun: str) -> str:
    """``"3 trunk tensors (a, b, c)"`` with at most a few examples."""
    shown = ", ".join(keys[:EXAMPLES]) + (", ..." if len(keys) > EXAMPLES else "")
    return f"{len(keys)} {noun}{'s' if len(keys) != 1 else ''} ({shown})"
