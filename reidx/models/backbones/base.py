"""The backbone interface and registry: a trunk returns five features f1..f5 at strides 2, 4, 8, 16, 32.

Every model input is in [-1, 1] (G's Tanh range, ``reidx.data.transforms``). A trunk built with ImageNet
weights converts its input to the ImageNet statistics it was trained on (``input_norm="imagenet"``); a
trunk trained from scratch takes the input as it is (``"none"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from reidx.models.backbones.weights import Pretrained, WeightsLoad
from reidx.registry import Registry

INPUT_NORMS = ("none", "imagenet")
#: stride of the trunk's last down-sampling stage: 2 (f5 at stride 32, as on ImageNet) or 1 (f5 at stride 16,
#: twice the map on a small input; Luo et al.'s "last stride" trick)
LAST_STRIDES = (1, 2)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

B = TypeVar("B", bound=Callable[..., "Backbone"])
_BACKBONES: Registry[Callable[..., Backbone]] = Registry("architecture", "reidx.models.backbones")


class Backbone(nn.Module):
    """A trunk: ``forward(x)`` returns [f1, f2, f3, f4, f5]; subclasses implement :meth:`extract` on the
    normalised input and set the attributes below.

    ``channels``: channels of f1..f5. ``weights_file``: torchvision's ImageNet file name (its cache name).
    ``imagenet``: what was loaded from that file (None when built from scratch).
    """

    name: str
    channels: tuple[int, int, int, int, int]
    weights_file: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, input_norm: str = "none") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input normalisation {input_norm!r}; use one of {', '.join(INPUT_NORMS)}")
        self.input_norm = input_norm
        self.imagenet: WeightsLoad | None = None
        if input_norm == "imagenet":
            self.register_buffer("imagenet_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("imagenet_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.input_norm == "imagenet":
            x = ((x + 1) / 2 - self.imagenet_mean) / self.imagenet_std
        return self.extract(x)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[f1, ..., f5] of an input already in the trunk's statistics."""
        raise NotImplementedError


def check_last_stride(last_stride: int) -> int:
    """``last_stride`` when it is one of :data:`LAST_STRIDES`; ValueError otherwise."""
    if last_stride not in LAST_STRIDES:
        raise ValueError(f"last stride {last_stride} is not one of {LAST_STRIDES}")
    return last_stride


def register_backbone(name: str) -> Callable[[B], B]:
    """Register ``builder(pretrained=False, input_norm="none", last_stride=2) -> Backbone`` as ``name``, stamped
    as its ``name`` (a decorator)."""
    return _BACKBONES.register(name)


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (and ``--arch``)."""
    return _BACKBONES.names()


def build_backbone(
    name: str, pretrained: Pretrained = False, input_norm: str = "none", last_stride: int = 2
) -> Backbone:
    """The trunk ``name``; ``pretrained`` = True (torchvision's cache) or a file of ImageNet weights;
    ``last_stride`` 1 keeps f5 at f4's resolution (:data:`LAST_STRIDES`)."""
    return _BACKBONES.get(name)(pretrained=pretrained, input_norm=input_norm, last_stride=last_stride)
