"""ResNet-18/34/50 trunks (torchvision) that return the five skip features E and F need.

For a 256×128 input and ResNet-50: f1 = relu(conv1) 64×128×64, f2 = layer1 256×64×32,
f3 = layer2 512×32×16, f4 = layer3 1024×16×8, f5 = layer4 2048×8×4 (cadnet.md §2.2 [L]).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from reidx.models.backbones.base import Backbone, check_last_stride, register_backbone
from reidx.models.backbones.weights import Pretrained, load_imagenet

#: arch -> (torchvision constructor, ImageNet weights, channels of f1..f5)
RESNETS: dict[str, tuple[Callable[..., tv_models.ResNet], tv_models.WeightsEnum, tuple[int, ...]]] = {
    "resnet18": (tv_models.resnet18, tv_models.ResNet18_Weights.IMAGENET1K_V1, (64, 64, 128, 256, 512)),
    "resnet34": (tv_models.resnet34, tv_models.ResNet34_Weights.IMAGENET1K_V1, (64, 64, 128, 256, 512)),
    "resnet50": (tv_models.resnet50, tv_models.ResNet50_Weights.IMAGENET1K_V1, (64, 256, 512, 1024, 2048)),
}


class ResNetTrunk(Backbone):
    """ResNet conv1–conv5 without avgpool/fc; f1 = relu(conv1), f2..f5 = layer1..layer4. ``last_stride`` 1
    sets layer4's first block (its strided conv and its shortcut) to stride 1: same weights, f5 at stride 16."""

    def __init__(
        self, arch: str, pretrained: Pretrained = False, input_norm: str = "none", last_stride: int = 2
    ) -> None:
        super().__init__(input_norm)
        constructor, weights, self.channels = RESNETS[arch]
        self.name, self.weights_file = arch, Path(weights.url).name
        net = constructor(weights=None)
        if pretrained:
            self.imagenet = load_imagenet(net, arch, self.weights_file, pretrained, classifier="fc.")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        first, stride = self.layer4[0], (check_last_stride(last_stride),) * 2
        strided = first.conv1 if isinstance(first, tv_models.resnet.BasicBlock) else first.conv2
        strided.stride = first.downsample[0].stride = stride

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


for _arch in RESNETS:
    register_backbone(_arch)(partial(ResNetTrunk, _arch))
