"""The plain re-ID baseline: one ResNet, GAP, BN + FC; no recovery. Same interface as CAD-Net."""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.heads import IdentityClassifier, global_pool, normalise
from reidx.models.resnet import Pretrained, ResNetTrunk

EMBEDDING_MODES = ("fused",)


class Baseline(nn.Module):
    """ResNet trunk + BN-neck classifier, trained with identity and triplet losses on HR and LR batches."""

    embedding_modes = EMBEDDING_MODES
    can_recover = False

    def __init__(self, num_classes: int, arch: str = "resnet50", pretrained: Pretrained = False) -> None:
        super().__init__()
        self.config = {"name": "baseline", "num_classes": num_classes, "arch": arch}
        self.encoder = ResNetTrunk(arch, pretrained)
        self.classifier = IdentityClassifier(self.encoder.out_channels, num_classes)

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encoder(x)[-1]
        pooled = global_pool(f)
        return {"f": f, "pooled": pooled, "logits": self.classifier(pooled), "embedding": normalise(pooled)}

    @torch.no_grad()
    def embed(self, x: torch.Tensor, mode: str = "fused") -> torch.Tensor:
        """The L2-normalised pooled feature (the baseline has one embedding, named ``fused``)."""
        if mode not in EMBEDDING_MODES:
            raise ValueError(f"the baseline has only the 'fused' embedding, not {mode!r}")
        return normalise(global_pool(self.encoder(x)[-1]))
