"""HR decoder G: recovers an HR image from E's feature map f, with skips from E (cadnet.md §2.2 [L]).

The block structure is RAIN's [L]; the widths are E's channels divided by ``width_divisor`` [G]. RAIN used
E's own widths (``width_divisor=1``: 2048→1024→512→256→64 for ResNet-50), which makes G cost about five
ResNet-50 trunks; the default 4 keeps CAD-Net's training cost within ~3.5× the baseline's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_WIDTH = 16


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


def _project(cin: int, cout: int) -> nn.Module:
    """A 1×1 projection where widths differ (identity where they match)."""
    return nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)


class HRDecoder(nn.Module):
    """Five up-sampling blocks f5 → image; E's f4..f1 are added (projected to G's widths) before blocks 2..5.

    ``skips`` = how many of E's features (f4, f3, f2, f1 in that order) are added [G: all four; RAIN's default
    config used f4 only]. Output: 3×H×W in [-1, 1] (Tanh). ``residual``: the output is a correction added to
    the input image, so the last convolution starts at zero (G starts as the identity on the input).
    """

    def __init__(
        self, channels: tuple[int, ...], skips: int = 4, width_divisor: int = 4, residual: bool = False
    ) -> None:
        super().__init__()
        widths = [max(MIN_WIDTH, c // width_divisor) for c in channels]
        w1, w2, w3, w4, w5 = widths
        self.skips = skips
        self.stem = _project(channels[-1], w5)
        self.blocks = nn.ModuleList([UpBlock(w5, w4), UpBlock(w4, w3), UpBlock(w3, w2), UpBlock(w2, w1)])
        self.laterals = nn.ModuleList(
            [_project(channels[3 - depth], widths[3 - depth]) for depth in range(min(skips, 4))]
        )
        self.head = nn.Sequential(UpBlock(w1, w1), nn.Conv2d(w1, 3, 3, padding=1), nn.Tanh())
        if residual:
            nn.init.zeros_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The H×W = ``size`` image from E's ``features``. Sides that are not multiples of 32 (VIPeR's native
        128×48) make E round its maps up; G then resizes each of its maps to the matching skip, and the image
        to ``size``."""
        x = self.stem(features[-1])
        for depth, block in enumerate(self.blocks):
            x = block(x)
            if depth < self.skips:
                skip = features[-2 - depth]
                x = fit(x, skip.shape[-2:]) + self.laterals[depth](skip)
        return fit(self.head(x), size)


def fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized (bilinear) to ``size``; unchanged, at no cost, when it already has that size."""
    size = tuple(size)
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
