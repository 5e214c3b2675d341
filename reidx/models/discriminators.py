"""Discriminators: D_F on feature maps (resolution), D_I on images (real HR vs recovered)."""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.backbones import build_backbone


class FeatureDiscriminator(nn.Module):
    """D_F (RAIN "D1" [L]): 3×3 conv + BN + LeakyReLU layers halving channels down to 32, then a linear logit.

    The map is pooled to 8×4 (its size for a 256×128 input) so any input size works.
    """

    def __init__(self, in_channels: int, min_channels: int = 32, max_layers: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(max_layers):
            cout = max(min_channels, cin // 2)
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
            cin = cout
            if cout == min_channels:
                break
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((8, 4)), nn.Flatten())
        self.logit = nn.Linear(cin * 8 * 4, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(f)).squeeze(1)

    def judge(self, f_h: torch.Tensor, f_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of HR and LR features judged in ONE batch. In train mode BatchNorm normalises by the batch's
        statistics: an all-HR or all-LR batch would be normalised by its own per-channel mean and variance,
        which are what tell E(x_H) from E(x_L) (blur scales activations down), and D_F would sit at chance."""
        logits = self(torch.cat([f_h, f_l]))
        return logits[: len(f_h)], logits[len(f_h) :]


class PatchDiscriminator(nn.Module):
    """D_I default [G]: a pix2pix PatchGAN (70×70 receptive field; pix2pix's width is 64, reidx's default 32
    to keep training cost down); one logit per patch."""

    def __init__(self, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        cin = width
        for index in range(1, layers + 1):
            cout = width * min(2**index, 8)
            stride = 2 if index < layers else 1
            modules += [nn.Conv2d(cin, cout, 4, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
            cin = cout
        modules.append(nn.Conv2d(cin, 1, 4, 1, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).flatten(1)


class ResNetImageDiscriminator(nn.Module):
    """D_I alternative [L] (the lab's later "ACGAN" discriminator): ResNet-18 trunk (from scratch, on the
    [-1, 1] images), global pool, one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = build_backbone("resnet18")
        self.logit = nn.Linear(self.trunk.out_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk(image)[-1].mean(dim=(2, 3))
        return self.logit(pooled)


def build_image_discriminator(kind: str, width: int = 32) -> nn.Module:
    """``patchgan`` (default) or ``resnet18``."""
    if kind == "patchgan":
        return PatchDiscriminator(width)
    if kind == "resnet18":
        return ResNetImageDiscriminator()
    raise ValueError(f"unknown image discriminator {kind!r}; use patchgan or resnet18")
