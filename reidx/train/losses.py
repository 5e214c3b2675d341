"""CAD-Net's losses (cadnet.md §3) and the objective module a training step runs (wrapped by DDP).

Conventions [L]: BCE-with-logits GANs; HR is the "real" label for both discriminators; the encoder's
adversarial loss is on LR features only, with the HR label as target (judged beside the detached HR
features, so D_F's BatchNorm sees the same two-resolution batch in both steps); D_I's fakes are G(f_L) and G(f_H).
L_rec is the mean absolute error per pixel channel [G] (RAIN's ``dist/(B·H·W)`` is 3× this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reidx.errors import ReidxError

REAL, FAKE = 1.0, 0.0  # HR = real, LR / recovered = fake

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss: mean over anchors of max(0, margin + d(a, hardest +) − d(a, hardest −)),
    Euclidean distances on L2-normalised ``embeddings``. Anchors without a negative are skipped."""
    embeddings = F.normalize(embeddings, dim=1)
    squared = (2.0 - 2.0 * embeddings @ embeddings.t()).clamp_min(1e-12)
    dist = squared.sqrt()
    same = labels[:, None] == labels[None, :]
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)
    valid = torch.isfinite(hardest_negative)
    if not valid.any():
        return embeddings.sum() * 0.0
    return F.relu(margin + hardest_positive - hardest_negative)[valid].mean()


def gan_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """BCE with logits against a constant label (:data:`REAL` or :data:`FAKE`)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass(frozen=True)
class LossWeights:
    """λ of each term of L = L_cls + λ_adv^{D_F}·L_adv^{D_F} + λ_rec·L_rec + λ_adv^{D_I}·L_adv^{D_I};
    a term whose switch is off or whose λ is 0 is not computed at all. ``label_smoothing``: ε of L_id's
    targets (1 − ε on the true id, ε spread uniformly over all ids)."""

    identity: float = 1.0
    triplet: float = 1.0
    margin: float = 2.0
    label_smoothing: float = 0.0
    rec: float = 1.0
    adv_feature: float = 0.01
    adv_image: float = 0.01

    @classmethod
    def from_config(cls, config) -> LossWeights:
        """From a :class:`reidx.train.config.TrainConfig` (ablation switches zero their λ)."""
        return cls(
            identity=config.lambda_id,
            triplet=config.lambda_tri,
            margin=config.margin,
            label_smoothing=config.label_smoothing,
            rec=config.lambda_rec if config.rec else 0.0,
            adv_feature=config.lambda_adv_feature if config.adv_feature else 0.0,
            adv_image=config.lambda_adv_image if config.adv_image else 0.0,
        )


class Objective(nn.Module):
    """Computes one phase's loss terms; ``forward(GENERATOR, x_h, y_h, x_l, t_l, y_l)`` returns
    ``(terms, saved)`` where ``saved`` holds the detached tensors ``forward(DISCRIMINATOR, saved)`` needs.
    Every dict of terms has ``total``, the weighted sum that is back-propagated."""

    def __init__(self, model: nn.Module, weights: LossWeights) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, phase: str, *inputs):
        if phase == GENERATOR:
            return self.generator_losses(*inputs)
        if phase == DISCRIMINATOR:
            return self.discriminator_losses(*inputs)
        raise ValueError(f"unknown phase {phase!r}")

    def generator_losses(
        self, x_h: torch.Tensor, y_h: torch.Tensor, x_l: torch.Tensor, t_l: torch.Tensor, y_l: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_cls (CE + batch-hard triplet, within the HR and within the LR batch) and, for CAD-Net,
        L_rec and the encoder / decoder sides of both adversarial losses. One forward on [x_H; x_L]."""
        w, n = self.weights, len(x_h)
        out = self.model(torch.cat([x_h, x_l]))
        terms: dict[str, torch.Tensor] = {}
        if w.identity:
            logits = out["logits"].float()
            smooth = w.label_smoothing
            terms["id"] = F.cross_entropy(logits[:n], y_h, label_smoothing=smooth) + F.cross_entropy(
                logits[n:], y_l, label_smoothing=smooth
            )
        if w.triplet:
            pooled = out["pooled"].float()
            terms["triplet"] = batch_hard_triplet(pooled[:n], y_h, w.margin) + batch_hard_triplet(
                pooled[n:], y_l, w.margin
            )
        saved: dict[str, torch.Tensor] = {}
        if "recovered" in out:
            f_h, f_l = out["f"].split(n)
            rec_h, rec_l = out["recovered"].split(n)
            if w.rec:
                terms["rec"] = F.l1_loss(rec_h.float(), x_h) + F.l1_loss(rec_l.float(), t_l)
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

    def weighted_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights
        scale = {
            "id": w.identity,
            "triplet": w.triplet,
            "rec": w.rec,
            "adv_feature": w.adv_feature,
            "adv_image": w.adv_image,
            "d_feature": w.adv_feature,
            "d_image": w.adv_image,
        }
        weighted = [scale[name] * value.float() for name, value in terms.items()]
        if not weighted:
            raise ReidxError("every loss term is switched off", "give at least one λ above 0")
        return torch.stack(weighted).sum()


@torch.no_grad()
def balanced_accuracy(real: torch.Tensor, fakes: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the share of ``real`` logits above 0 and the share of ``fakes`` logits at or below 0 (0.5 = chance)."""
    fake = torch.cat([logits.flatten() for logits in fakes])
    return 0.5 * ((real.float() > 0).float().mean() + (fake.float() <= 0).float().mean())
