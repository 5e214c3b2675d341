"""MobileNetV2 trunk (torchvision's architecture) split into the five features E and F need.

For a 256×128 input: f1 = features[0:2] 16×128×64, f2 = features[2:4] 24×64×32, f3 = features[4:7]
32×32×16, f4 = features[7:14] 96×16×8, f5 = features[14:19] (up to the 1×1 conv to 1280) 1280×8×4.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import models as tv_models

from reidx.models.backbones.base import Backbone, check_last_stride, register_backbone
from reidx.models.backbones.weights import Pretrained, load_imagenet

#: where each of f1..f5 ends in torchvision's ``features``
STAGE_ENDS = (2, 4, 7, 14, 19)
#: the block that down-samples f4 to f5 (its depthwise 3×3 conv has stride 2): the "last stride"
LAST_DOWNSAMPLING_BLOCK = 14


@register_backbone("mobilenet_v2")
class MobileNetV2Trunk(Backbone):
    """torchvision's MobileNetV2 ``features`` (width 1.0), classifier dropped; keys stay ``features.N.*``.
    ``last_stride`` 1 sets the depthwise conv of block 14 to stride 1 (same weights, f5 at stride 16)."""

    channels = (16, 24, 32, 96, 1280)
    weights_file = Path(tv_models.MobileNet_V2_Weights.IMAGENET1K_V1.url).name

    def __init__(self, pretrained: Pretrained = False, input_norm: str = "none", last_stride: int = 2) -> None:
        super().__init__(input_norm)
        net = tv_models.mobilenet_v2(weights=None)
        if pretrained:
            self.imagenet = load_imagenet(net, self.name, self.weights_file, pretrained, classifier="classifier.")
        self.features = net.features
        depthwise = self.features[LAST_DOWNSAMPLING_BLOCK].conv[1][0]
        depthwise.stride = (check_last_stride(last_stride),) * 2

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in STAGE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs
