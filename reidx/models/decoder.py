"""HR decoder G: recovers an HR image from E's feature map f, with skips from E (cadnet.md §2.2 [L])."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_lrelu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]


class UpBlock(nn.Sequential):
    """×2 transposed convolution, then two 3×3 convolutions; BN + LeakyReLU(0.2) after each."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            *_conv_bn_lrelu(cout, cout),
            *_conv_bn_lrelu(cout, cout),
        )


class HRDecoder(nn.Module):
    """Five up-sampling blocks f5 → image; E's f4..f1 are added before blocks 2..5.

    ``skips`` = how many of E's features (f4, f3, f2, f1 in that order) are added [G: all four by default;
    RAIN's default config used f4 only]. Output: 3×H×W in [-1, 1] (Tanh).
    """

    def __init__(self, channels: tuple[int, ...], skips: int = 4) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.skips = skips
        self.blocks = nn.ModuleList([UpBlock(c5, c4), UpBlock(c4, c3), UpBlock(c3, c2), UpBlock(c2, c1)])
        self.head = nn.Sequential(UpBlock(c1, c1), nn.Conv2d(c1, 3, 3, padding=1), nn.Tanh())

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for depth, block in enumerate(self.blocks):
            x = block(x)
            skip = features[-2 - depth]
            if depth < self.skips:
                x = x + skip
        return self.head(x)
