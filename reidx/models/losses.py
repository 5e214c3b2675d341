"""The loss primitives and the :class:`Objective` a training step runs (wrapped by DDP): identity CE + batch-hard
triplet, the loss recipe every model has. A model with more terms (CAD-Net's L_rec and adversarial losses,
cadnet.md §3) subclasses :class:`Objective` and :class:`LossWeights` in its own module and returns them from
:meth:`reidx.models.base.ReidModel.objective`.

Conventions [L]: BCE-with-logits GANs; HR is the "real" label for every discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reidx.errors import ReidxError

REAL, FAKE = 1.0, 0.0  # HR = real, LR / recovered = fake

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss: mean over anchors of max(0, margin + d(a, hardest +) − d(a, hardest −)),
    Euclidean distances on L2-normalised ``embeddings``. Anchors without a negative are skipped.

    The distances are float32 even under autocast: in float16 the clamp's 1e-12 rounds to 0, so the diagonal's
    square root has no finite gradient, and CUDA AMP skipped every optimiser step."""
    with torch.autocast(embeddings.device.type, enabled=False):
        embeddings = F.normalize(embeddings.float(), dim=1)
        dist = (2.0 - 2.0 * embeddings @ embeddings.t()).clamp_min(1e-12).sqrt()
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


@torch.no_grad()
def balanced_accuracy(real: torch.Tensor, fakes: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the share of ``real`` logits above 0 and the share of ``fakes`` logits at or below 0 (0.5 = chance)."""
    fake = torch.cat([logits.flatten() for logits in fakes])
    return 0.5 * ((real.float() > 0).float().mean() + (fake.float() <= 0).float().mean())


@dataclass(frozen=True)
class LossWeights:
    """λ of L_cls's terms (a term whose λ is 0 is not computed at all). ``label_smoothing``: ε of L_id's targets
    (1 − ε on the true id, ε spread uniformly over all ids)."""

    identity: float = 1.0
    triplet: float = 1.0
    margin: float = 2.0
    label_smoothing: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> LossWeights:
        """From a :class:`reidx.train.config.TrainConfig`."""
        return cls(
            identity=config.lambda_id,
            triplet=config.lambda_tri,
            margin=config.margin,
            label_smoothing=config.label_smoothing,
        )

    def scales(self) -> dict[str, float]:
        """Loss term -> its λ in ``total``."""
        return {"id": self.identity, "triplet": self.triplet}


class Objective(nn.Module):
    """Computes one phase's loss terms; ``forward(GENERATOR, x_h, y_h, x_l, t_l, y_l)`` returns
    ``(terms, saved)`` where ``saved`` holds the detached tensors ``forward(DISCRIMINATOR, saved)`` needs (none
    here: the trainer runs a discriminator step only when it is not empty). Every dict of terms has ``total``,
    the weighted sum that is back-propagated. This recipe is L_cls: CE + batch-hard triplet, within the HR and
    within the LR batch, on one forward of [x_H; x_L]."""

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
        """L_cls; subclasses add their terms to :meth:`classification_terms` of the same forward."""
        out = self.model(torch.cat([x_h, x_l]))
        terms = self.classification_terms(out, y_h, y_l)
        terms["total"] = self.weighted_total(terms)
        return terms, {}

    def classification_terms(
        self, out: dict[str, torch.Tensor], y_h: torch.Tensor, y_l: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """L_id (CE on ``logits``) and L_tri (batch-hard on ``pooled``) of the HR half and the LR half of ``out``."""
        w, n = self.weights, len(y_h)
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
        return terms

    def discriminator_losses(self, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The discriminators' terms (models without discriminators have none and are never asked)."""
        raise NotImplementedError(f"{type(self.model).__name__} has no discriminator")

    def weighted_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ λ · term over ``terms`` (:meth:`LossWeights.scales`)."""
        scale = self.weights.scales()
        weighted = [scale[name] * value.float() for name, value in terms.items()]
        if not weighted:
            raise ReidxError("every loss term is switched off", "give at least one λ above 0")
        return torch.stack(weighted).sum()
