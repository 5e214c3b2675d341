"""D_I default [G]: a pix2pix PatchGAN."""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.image_discriminators import register_image_discriminator


@register_image_discriminator("patchgan")
class PatchDiscriminator(nn.Module):
    """A pix2pix PatchGAN (70×70 receptive field; pix2pix's width is 64, reidx's default 32 to keep training cost
    down); one logit per patch."""

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
