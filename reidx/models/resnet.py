"""ResNet trunks (torchvision) that return the five skip features E and F need.

For a 256×128 input and ResNet-50: f1 = relu(conv1) 64×128×64, f2 = layer1 256×64×32,
f3 = layer2 512×32×16, f4 = layer3 1024×16×8, f5 = layer4 2048×8×4 (cadnet.md §2.2 [L]).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from reidx.errors import ReidxError

#: arch -> (constructor, ImageNet weights enum, channels of f1..f5)
ARCHS: dict[str, tuple] = {
    "resnet18": (tv_models.resnet18, tv_models.ResNet18_Weights.IMAGENET1K_V1, (64, 64, 128, 256, 512)),
    "resnet34": (tv_models.resnet34, tv_models.ResNet34_Weights.IMAGENET1K_V1, (64, 64, 128, 256, 512)),
    "resnet50": (tv_models.resnet50, tv_models.ResNet50_Weights.IMAGENET1K_V1, (64, 256, 512, 1024, 2048)),
}

Pretrained = bool | str | os.PathLike


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision's cache keeps the ImageNet weights of ``arch``."""
    weights = ARCHS[arch][1]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def load_imagenet_state(arch: str, pretrained: Pretrained) -> dict[str, torch.Tensor]:
    """ImageNet weights from ``pretrained`` (a file) or torchvision's cache; never downloads."""
    path = imagenet_weights_path(arch) if pretrained is True else Path(pretrained)
    if not path.is_file():
        raise ReidxError(
            f"ImageNet weights for {arch} are not on this machine ({path})",
            f"put {ARCHS[arch][1].url} there, pass --pretrained PATH, or train with --no-pretrained",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable weights file
        raise ReidxError(f"cannot read ImageNet weights {path}: {exc}", "pass a torchvision .pth file") from None


class ResNetTrunk(nn.Module):
    """ResNet conv1–conv5 without avgpool/fc; ``forward`` returns [f1, f2, f3, f4, f5]."""

    def __init__(self, arch: str = "resnet50", pretrained: Pretrained = False) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ReidxError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHS)}")
        constructor, _, self.channels = ARCHS[arch]
        net = constructor(weights=None)
        if pretrained:
            state = load_imagenet_state(arch, pretrained)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.load_state_dict(state, strict=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]
