"""D_I alternative [L]: the lab's later "ACGAN" discriminator, a ResNet-18 trunk."""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.backbones import build_backbone
from reidx.models.image_discriminators import register_image_discriminator


@register_image_discriminator("resnet18")
class ResNetImageDiscriminator(nn.Module):
    """ResNet-18 trunk (from scratch, on the [-1, 1] images), global pool, one logit. It has no ``width``."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.trunk = build_backbone("resnet18")
        self.logit = nn.Linear(self.trunk.out_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk(image)[-1].mean(dim=(2, 3))
        return self.logit(pooled)
