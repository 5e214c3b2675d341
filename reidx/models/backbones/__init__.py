"""Backbone registry: one trunk family per module here, each registered by name (``--arch``).

``build_backbone(name, pretrained, input_norm)`` gives a :class:`Backbone` whose forward returns
[f1, ..., f5] (strides 2, 4, 8, 16, 32) with ``channels``; adding a family is one file in this package
(imported on the registry's first lookup).
"""

from __future__ import annotations

from reidx.models.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_NORMS,
    Backbone,
    build_backbone,
    list_backbones,
    register_backbone,
)
from reidx.models.backbones.weights import Pretrained, WeightsLoad, weights_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_NORMS",
    "Backbone",
    "Pretrained",
    "WeightsLoad",
    "build_backbone",
    "list_backbones",
    "register_backbone",
    "weights_path",
]
