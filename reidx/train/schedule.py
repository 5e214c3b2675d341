"""The generator-side learning-rate schedule: an optional linear warm-up, then poly, step or cosine decay.

:func:`lr_factor` is the multiplier of the base lr at an optimiser step; without warm-up, ``poly`` is the
[L] schedule lr·(1 − step/total)^power that runs before this module had the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: [B] the step schedule divides the lr by this at each of its milestones
STEP_DECAY = 0.1


@dataclass(frozen=True)
class Schedule:
    """``kind`` (poly | step | cosine) over ``total`` steps, the first ``warmup`` of them a linear ramp from
    ``warmup_factor``·lr to lr; ``power`` is poly's, ``milestones`` step's (fractions of ``total``)."""

    kind: str
    total: int
    warmup: int = 0
    warmup_factor: float = 0.1
    power: float = 0.9
    milestones: tuple[float, float] = (0.33, 0.58)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup
        if self.kind == "step":
            return STEP_DECAY ** sum(step >= round(m * self.total) for m in self.milestones)
        t = min(step - self.warmup, self.total - self.warmup) / max(1, self.total - self.warmup)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return (1.0 - t) ** self.power


def schedule_of(config, steps_per_epoch: int) -> Schedule:
    """The :class:`Schedule` of a :class:`reidx.train.config.TrainConfig` at ``steps_per_epoch``."""
    return Schedule(
        kind=config.lr_schedule,
        total=max(1, config.epochs * steps_per_epoch),
        warmup=min(config.warmup_epochs, config.epochs) * steps_per_epoch,
        warmup_factor=config.warmup_factor,
        power=config.poly_power,
        milestones=tuple(config.lr_steps),
    )
