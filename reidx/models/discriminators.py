"""D_F, the discriminator of feature maps (HR vs LR); D_I, on images, is a registry of kinds
(:mod:`reidx.models.image_discriminators`)."""

from __future__ import annotations

import torch
from torch import nn


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
