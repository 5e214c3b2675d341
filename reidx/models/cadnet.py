"""CAD-Net (Li et al., ICCV 2019): cross-resolution GAN (E, G, D_F, D_I) + cross-modal re-ID (F, C).

x ─E─► f ─G─► x̃_H ─F─► g;  v = [f, g] ─GAP─► C.  With ``residual_recovery`` [G], x̃_H = x + G(f): G adds the
missing detail to the (bilinear-upsampled) input instead of painting the whole image, so recovery starts at
the bilinear baseline rather than at noise.  D_F judges f (HR vs LR), D_I judges x̃_H vs real HR.
Retrieval embedding: GAP([f, g]) ("fused", each half L2-normalised, then the whole [G]), or GAP(f) /
GAP(g) alone (the paper's "f only" / "g only" rows). With ``bnneck`` (Luo et al.) each of these is taken
after C's BatchNorm (its f and g channels) instead of before it.

Its loss recipe (cadnet.md §3, :class:`CADNetObjective`) adds to L_cls, conventions [L]: the encoder's
adversarial loss is on LR features only, with the HR label as target (judged beside the detached HR features,
so D_F's BatchNorm sees the same two-resolution batch in both steps); D_I's fakes are G(f_L) and G(f_H).
L_rec is the mean absolute error per pixel channel [G] (RAIN's ``dist/(B·H·W)`` is 3× this). With residual
recovery its HR term holds G at the identity (measured: G equals bilinear up-sampling): it asks for a zero
correction on every HR pixel, and under L1 that point mass at zero is the median G settles on unless it tells
HR inputs from LR ones, which f, made resolution-invariant, hides. ``rec_hr`` off drops that term (the LR term
then counts twice, so λ_rec keeps its scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reidx.models.backbones import Pretrained, build_backbone
from reidx.models.base import ReidModel, register_model, resolve_input_norm
from reidx.models.decoder import HRDecoder
from reidx.models.discriminators import FeatureDiscriminator
from reidx.models.heads import IdentityClassifier, global_pool, normalise
from reidx.models.image_discriminators import build_image_discriminator, list_image_discriminators
from reidx.models.losses import FAKE, REAL, LossWeights, Objective, balanced_accuracy, gan_loss
from reidx.options import option

EMBEDDING_MODES = ("fused", "f", "g")
#: the common ``reidx train`` option after which CAD-Net's loss options are listed
LOSSES = "random_erasing"


@dataclass
class CADNetOptions:
    """CAD-Net's own ``reidx train`` options: its networks' knobs, then its loss weights and ablation switches."""

    image_discriminator: str = option(
        "patchgan", "[G] D_I (the paper does not say): patchgan, or resnet18 [L].", list_image_discriminators
    )
    discriminator_width: int = option(32, "[G] PatchGAN base width (pix2pix: 64).")
    decoder_skips: int = option(4, "[G] E→G skips (f4..f1); RAIN's default used f4 only.")
    decoder_width_divisor: int = option(
        4, "[G] G's widths = E's / this; 1 = RAIN's full decoder (about 5 trunks of cost)."
    )
    residual_recovery: bool = option(
        False, "[G] G adds detail to the upsampled input (x + G(f)) instead of painting the image (paper: G(f))."
    )
    lambda_rec: float = option(1.0, "[L] Weight of L_rec.", minimum=0, after=LOSSES)
    lambda_adv_feature: float = option(
        0.01, "[L] Weight of L_adv^D_F; also scales D_F's own loss (RAIN w_dis).", minimum=0, after=LOSSES
    )
    lambda_adv_image: float = option(
        0.01, "[G] Weight of L_adv^D_I (cadnet.md suggests sweeping 0.01–1).", minimum=0, after=LOSSES
    )
    adv_feature: bool = option(True, "L_adv^D_F (off: the w/o L_adv^D_F ablation).", after=LOSSES)
    adv_image: bool = option(True, "L_adv^D_I (off: the w/o L_adv^D_I ablation).", after=LOSSES)
    rec: bool = option(True, "L_rec (off: the w/o L_rec ablation).", after=LOSSES)
    rec_hr: bool = option(
        True,
        "L_rec's HR term (the recovered x_H against x_H); off, the LR term counts twice: a residual G learns.",
        after=LOSSES,
    )


@register_model("cadnet")
class CADNet(ReidModel):
    """The generative dual model. ``generator_parameters`` (E, G, F, C) and ``discriminator_parameters``
    (D_F, D_I) are optimised separately. E and F are ``arch`` trunks (any registered backbone); G, D_F and
    C are sized from E's channels. ``input_norm`` (None: ``imagenet`` when ``pretrained``, else ``none``)
    is how E and F convert their [-1, 1] input."""

    embedding_modes = EMBEDDING_MODES
    can_recover = True
    trunk_names = {"encoder": "E", "hr_encoder": "F"}
    tiny: ClassVar[dict[str, Any]] = {"discriminator_width": 8}
    Options = CADNetOptions

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
            "name": self.name,
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

    def objective(self, config: Any) -> CADNetObjective:
        return CADNetObjective(self, CADNetWeights.from_config(config))

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


@dataclass(frozen=True)
class CADNetWeights(LossWeights):
    """λ of each term of L = L_cls + λ_adv^{D_F}·L_adv^{D_F} + λ_rec·L_rec + λ_adv^{D_I}·L_adv^{D_I}; a term
    whose switch is off or whose λ is 0 is not computed at all. Each discriminator's own loss is scaled by its
    adversarial λ (RAIN's w_dis)."""

    rec: float = 1.0
    rec_hr: bool = True  # L_rec's HR term (else its LR term counts twice)
    adv_feature: float = 0.01
    adv_image: float = 0.01

    @classmethod
    def from_config(cls, config: Any) -> CADNetWeights:
        """From a :class:`reidx.train.config.TrainConfig` (ablation switches zero their λ)."""
        return cls(
            **asdict(LossWeights.from_config(config)),
            rec=config.lambda_rec if config.rec else 0.0,
            rec_hr=config.rec_hr,
            adv_feature=config.lambda_adv_feature if config.adv_feature else 0.0,
            adv_image=config.lambda_adv_image if config.adv_image else 0.0,
        )

    def scales(self) -> dict[str, float]:
        adversarial = {"adv_feature": self.adv_feature, "adv_image": self.adv_image}
        discriminators = {"d_feature": self.adv_feature, "d_image": self.adv_image}
        return {**super().scales(), "rec": self.rec, **adversarial, **discriminators}


class CADNetObjective(Objective):
    """L_cls, L_rec and the encoder / decoder sides of both adversarial losses; then the discriminators' own."""

    weights: CADNetWeights
    model: CADNet

    def generator_losses(
        self, x_h: torch.Tensor, y_h: torch.Tensor, x_l: torch.Tensor, t_l: torch.Tensor, y_l: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_cls, L_rec (x̃ of x_H against x_H, of x_L against its HR target t_L) and the adversarial terms,
        all from one forward on [x_H; x_L]; ``saved``: the detached tensors the discriminator step judges."""
        w, n = self.weights, len(x_h)
        out = self.model(torch.cat([x_h, x_l]))
        terms = self.classification_terms(out, y_h, y_l)
        saved: dict[str, torch.Tensor] = {}
        f_h, f_l = out["f"].split(n)
        rec_h, rec_l = out["recovered"].split(n)
        if w.rec:
            lr_term = F.l1_loss(rec_l.float(), t_l)
            terms["rec"] = (F.l1_loss(rec_h.float(), x_h) if w.rec_hr else lr_term) + lr_term
        if w.adv_feature:
            _, judged_l = self.model.feature_discriminator.judge(f_h.detach(), f_l)
            terms["adv_feature"] = gan_loss(judged_l, REAL)
            saved.update(f_h=f_h.detach(), f_l=f_l.detach())
        if w.adv_image:
            image_d = self.model.image_discriminator
            terms["adv_image"] = gan_loss(image_d(rec_l), REAL) + gan_loss(image_d(rec_h), REAL)
            saved.update(x_h=x_h, rec_h=rec_h.detach(), rec_l=rec_l.detach())
        terms["total"] = self.weighted_total(terms)
        return terms, saved

    def discriminator_losses(self, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """D_F: HR features real, LR fake, judged in one batch (:meth:`FeatureDiscriminator.judge`). D_I: x_H
        real (counted twice, as in L_adv^{D_I}), G(f_L) and G(f_H) fake. Each is scaled by its λ (RAIN's
        w_dis). ``acc_d_feature`` / ``acc_d_image`` (not in ``total``): each discriminator's balanced accuracy
        on these batches, before its update."""
        terms: dict[str, torch.Tensor] = {}
        accuracies: dict[str, torch.Tensor] = {}
        if "f_h" in saved:
            real, fake = self.model.feature_discriminator.judge(saved["f_h"], saved["f_l"])
            terms["d_feature"] = gan_loss(real, REAL) + gan_loss(fake, FAKE)
            accuracies["acc_d_feature"] = balanced_accuracy(real, [fake])
        if "x_h" in saved:
            image_d = self.model.image_discriminator
            real, fake_l, fake_h = image_d(saved["x_h"]), image_d(saved["rec_l"]), image_d(saved["rec_h"])
            terms["d_image"] = 2 * gan_loss(real, REAL) + gan_loss(fake_l, FAKE) + gan_loss(fake_h, FAKE)
            accuracies["acc_d_image"] = balanced_accuracy(real, [fake_l, fake_h])
        terms["total"] = self.weighted_total(terms)
        return {**terms, **accuracies}
