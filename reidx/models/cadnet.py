"""CAD-Net (Li et al., ICCV 2019): cross-resolution GAN (E, G, D_F, D_I) + cross-modal re-ID (F, C).

x ─E─► f ─G─► x̃_H ─F─► g;  v = [f, g] ─GAP─► C.  With ``residual_recovery`` [G], x̃_H = x + G(f): G adds the
missing detail to the (bilinear-upsampled) input instead of painting the whole image, so recovery starts at
the bilinear baseline rather than at noise.  D_F judges f (HR vs LR), D_I judges x̃_H vs real HR.
Retrieval embedding: GAP([f, g]) ("fused", each half L2-normalised, then the whole [G]), or GAP(f) /
GAP(g) alone (the paper's "f only" / "g only" rows). With ``bnneck`` (Luo et al.) each of these is taken
after C's BatchNorm (its f and g channels) instead of before it.
"""

from __future__ import annotations

import torch
from torch import nn

from reidx.models.backbones import Pretrained, build_backbone
from reidx.models.base import ReidModel, register_model, resolve_input_norm
from reidx.models.decoder import HRDecoder
from reidx.models.discriminators import FeatureDiscriminator, build_image_discriminator
from reidx.models.heads import IdentityClassifier, global_pool, normalise

EMBEDDING_MODES = ("fused", "f", "g")


@register_model("cadnet")
class CADNet(ReidModel):
    """The generative dual model. ``generator_parameters`` (E, G, F, C) and ``discriminator_parameters``
    (D_F, D_I) are optimised separately. E and F are ``arch`` trunks (any registered backbone); G, D_F and
    C are sized from E's channels. ``input_norm`` (None: ``imagenet`` when ``pretrained``, else ``none``)
    is how E and F convert their [-1, 1] input."""

    embedding_modes = EMBEDDING_MODES
    can_recover = True
    trunk_names = {"encoder": "E", "hr_encoder": "F"}

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        pretrained: Pretrained = False,
        image_discriminator: str = "patchgan",
        discriminator_width: int = 32,
        decoder_skips: int = 4,
        decoder_width_divisor: int = 4,
        residual_recovery: bool = False,
        input_norm: str | None = None,
        bnneck: bool = False,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        input_norm = resolve_input_norm(input_norm, pretrained)
        self.config = {
            "name": "cadnet",
            "num_classes": num_classes,
            "arch": arch,
            "image_discriminator": image_discriminator,
            "discriminator_width": discriminator_width,
            "decoder_skips": decoder_skips,
            "decoder_width_divisor": decoder_width_divisor,
            "residual_recovery": residual_recovery,
            "input_norm": input_norm,
            "bnneck": bnneck,
            "last_stride": last_stride,
        }
        self.encoder = build_backbone(arch, pretrained, input_norm, last_stride)  # E
        self.decoder = HRDecoder(self.encoder.channels, decoder_skips, decoder_width_divisor, residual_recovery)  # G
        self.hr_encoder = build_backbone(arch, pretrained, input_norm, last_stride)  # F
        dim = self.encoder.out_channels
        self.classifier = IdentityClassifier(2 * dim, num_classes)  # C
        self.feature_discriminator = FeatureDiscriminator(dim)  # D_F
        self.image_discriminator = build_image_discriminator(image_discriminator, discriminator_width)  # D_I

    def generator_parameters(self) -> list[nn.Parameter]:
        modules = (self.encoder, self.decoder, self.hr_encoder, self.classifier)
        return [p for module in modules for p in module.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        modules = (self.feature_discriminator, self.image_discriminator)
        return [p for module in modules for p in module.parameters()]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the losses need (f, recovered, g, pooled v, identity logits) and the fused retrieval embedding."""
        features = self.encoder(x)
        f = features[-1]
        recovered = self._recover(x, features)
        g = self.hr_encoder(recovered)[-1]
        pooled = torch.cat([global_pool(f), global_pool(g)], dim=1)
        logits, normed = self.classifier(pooled)
        retrieved = normed if self.config["bnneck"] else pooled
        return {
            "f": f,
            "recovered": recovered,
            "g": g,
            "pooled": pooled,
            "logits": logits,
            "embedding": fuse(*retrieved.split(f.shape[1], dim=1)),
        }

    @torch.no_grad()
    def recover(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)) (plus x when residual): the recovered HR image in [-1, 1]."""
        return self._recover(x, self.encoder(x))

    def _recover(self, x: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        recovered = self.decoder(features, x.shape[-2:])
        return (x + recovered).clamp(-1.0, 1.0) if self.config["residual_recovery"] else recovered

    @torch.no_grad()
    def embed(self, x: torch.Tensor, mode: str = "fused") -> torch.Tensor:
        """The L2-normalised retrieval embedding for ``mode`` in ``fused | f | g``."""
        if mode not in EMBEDDING_MODES:
            raise ValueError(f"unknown embedding mode {mode!r}; CAD-Net has {', '.join(EMBEDDING_MODES)}")
        features = self.encoder(x)
        f = self._retrieved(global_pool(features[-1]), 0)
        if mode == "f":
            return normalise(f)
        g = self._retrieved(global_pool(self.hr_encoder(self._recover(x, features))[-1]), f.shape[1])
        return normalise(g) if mode == "g" else fuse(f, g)

    def _retrieved(self, pooled: torch.Tensor, start: int) -> torch.Tensor:
        """The retrieval feature of one pooled stream: itself, or with ``bnneck`` its channels of C's BN."""
        return self.classifier.neck(pooled, start) if self.config["bnneck"] else pooled


def fuse(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The "fused" retrieval embedding from pooled f and g: each half L2-normalised first, so both weigh
    equally whatever their scales, then the whole."""
    return normalise(torch.cat([normalise(f), normalise(g)], dim=1))
