"""The plain re-ID baseline: one trunk, GAP, BN + FC; no recovery. Same interface as CAD-Net."""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.backbones import Pretrained, build_backbone
from reidx.models.base import ReidModel, register_model, resolve_input_norm
from reidx.models.heads import IdentityClassifier, global_pool, normalise

EMBEDDING_MODES = ("fused",)


@register_model("baseline")
class Baseline(ReidModel):
    """An ``arch`` trunk + BN-neck classifier, trained with identity and triplet losses on HR and LR batches.
    ``input_norm``, ``bnneck`` and ``last_stride`` as in :class:`reidx.models.cadnet.CADNet`."""

    embedding_modes = EMBEDDING_MODES
    can_recover = False

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        pretrained: Pretrained = False,
        input_norm: str | None = None,
        bnneck: bool = False,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        input_norm = resolve_input_norm(input_norm, pretrained)
        self.config = {
            "name": self.name,
            "num_classes": num_classes,
            "arch": arch,
            "input_norm": input_norm,
            "bnneck": bnneck,
            "last_stride": last_stride,
        }
        self.encoder = build_backbone(arch, pretrained, input_norm, last_stride)
        self.classifier = IdentityClassifier(self.encoder.out_channels, num_classes)

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encoder(x)[-1]
        pooled = global_pool(f)
        logits, normed = self.classifier(pooled)
        embedding = normalise(normed if self.config["bnneck"] else pooled)
        return {"f": f, "pooled": pooled, "logits": logits, "embedding": embedding}

    @torch.no_grad()
    def embed(self, x: torch.Tensor, mode: str = "fused") -> torch.Tensor:
        """The L2-normalised pooled feature, after the classifier's BN with ``bnneck`` (the baseline has one
        embedding, named ``fused``)."""
        if mode not in EMBEDDING_MODES:
            raise ValueError(f"the baseline has only the 'fused' embedding, not {mode!r}")
        pooled = global_pool(self.encoder(x)[-1])
        return normalise(self.classifier.neck(pooled) if self.config["bnneck"] else pooled)
