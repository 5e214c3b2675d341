"""The one recovery path: LR inputs through G, scored with their bilinear up-sampling against the HR originals.

``recover``, ``report`` and the trainer's validation all recover through :func:`recover_batches` and score
through :class:`RecoveryScores`, so SSIM / PSNR / LPIPS mean the same everywhere: both images at model input
size, pixels mapped from [-1, 1] to [0, 1] (protocols.md §3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from reidx.data.loading import iterate_images
from reidx.data.transforms import to_unit_range
from reidx.metrics import RecoveryResult, recovery_metrics
from reidx.models import ReidModel

#: What is scored against the HR original: G's output, and the bilinear-upsampled LR input it started from.
MODEL, BILINEAR = "model", "bilinear"


@dataclass(frozen=True)
class RecoveryBatch:
    """One batch in path order: the LR inputs (bilinear-upsampled to model size), G's recovery of them
    (None without a model) and the HR originals (None without them), all in [-1, 1]."""

    indices: torch.Tensor
    lr: torch.Tensor
    recovered: torch.Tensor | None
    hr: torch.Tensor | None


@torch.no_grad()
def recover_batches(
    model: ReidModel | None,
    lr_paths: Sequence[str],
    size: tuple[int, int],
    *,
    hr_paths: Sequence[str] | None = None,
    rates: Sequence[int] | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Iterator[RecoveryBatch]:
    """Batches of LR images (image i down-sampled by ``rates[i]`` first when given), ``model.recover`` of them
    and the HR image ``hr_paths[i]`` of each, decoded in DataLoader workers."""
    device = next(model.parameters()).device if model is not None else None
    hr_batches = iterate_images(hr_paths, size, batch_size, workers) if hr_paths is not None else None
    for lr, indices in iterate_images(lr_paths, size, batch_size, workers, rates):
        recovered = model.recover(lr.to(device, non_blocking=True)).float().cpu() if model is not None else None
        yield RecoveryBatch(indices, lr, recovered, next(hr_batches)[0] if hr_batches is not None else None)


@dataclass
class RecoveryScores:
    """Per-image scores against the HR originals, added batch by batch: of G's output (``MODEL``, when
    recovered) and of the bilinear input (``BILINEAR``). ``lpips=False`` skips LPIPS."""

    lpips: bool = True
    batches: dict[str, list[RecoveryResult]] = field(default_factory=dict)

    def add(self, batch: RecoveryBatch) -> None:
        """Score one batch (it must carry its HR originals)."""
        if batch.hr is None:
            raise ValueError("a recovery batch without HR originals cannot be scored")
        target = to_unit_range(batch.hr)
        scored = {MODEL: batch.recovered, BILINEAR: batch.lr}
        for method, images in scored.items():
            if images is not None:
                result = recovery_metrics(to_unit_range(images), target, lpips=self.lpips)
                self.batches.setdefault(method, []).append(result)

    def results(self) -> dict[str, RecoveryResult]:
        """One :class:`RecoveryResult` per scored method (``MODEL`` first), images in path order."""
        return {method: RecoveryResult.concat(results) for method, results in self.batches.items()}


def score_recovery(
    model: ReidModel | None,
    lr_paths: Sequence[str],
    hr_paths: Sequence[str],
    size: tuple[int, int],
    *,
    rates: Sequence[int] | None = None,
    lpips: bool = True,
    batch_size: int = 64,
    workers: int = 2,
) -> dict[str, RecoveryResult]:
    """The scores of G's recovery of ``lr_paths`` (``model`` None: none) and of their bilinear up-sampling,
    each against ``hr_paths`` at ``size``."""
    scores = RecoveryScores(lpips)
    for batch in recover_batches(
        model, lr_paths, size, hr_paths=hr_paths, rates=rates, batch_size=batch_size, workers=workers
    ):
        scores.add(batch)
    return scores.results()
