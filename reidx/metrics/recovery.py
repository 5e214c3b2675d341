"""Recovery quality between G's output and the HR original (protocols.md §3): SSIM, PSNR and LPIPS.

Both inputs are (N, 3, H, W) batches in [0, 1] at model input size. SSIM and PSNR come from torchmetrics
(Gaussian-window SSIM, data range 1). LPIPS (AlexNet) needs torchvision's ImageNet AlexNet weights in the
torch hub cache; reidx never downloads them, so without the file LPIPS is reported as unavailable, with
the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from reidx.metrics.checks import MetricInputError
from reidx.metrics.table import RECOVERY_METRICS

_LPIPS_BATCH = 64


@dataclass(frozen=True)
class RecoveryResult:
    """Per-image ``scores`` of each of ``RECOVERY_METRICS`` (the metric table's recovery rows; PSNR in dB, inf
    for an image identical to its target); a score also reads as an attribute (``result.psnr``). LPIPS is None
    when unavailable, and ``lpips_reason`` says why."""

    scores: dict[str, np.ndarray | None]
    lpips_reason: str | None

    def __getattr__(self, name: str) -> np.ndarray | None:
        scores = self.__dict__.get("scores", {})
        if name in scores:
            return scores[name]
        raise AttributeError(name)

    @classmethod
    def concat(cls, results: Sequence[RecoveryResult]) -> RecoveryResult:
        """The scores of several batches as one result, in order (LPIPS and its reason from the first)."""
        if not results:
            raise MetricInputError("no recovery results to concatenate")
        scores = {
            name: None if results[0].scores[name] is None else np.concatenate([r.scores[name] for r in results])
            for name in RECOVERY_METRICS
        }
        return cls(scores, results[0].lpips_reason)

    def summary(self) -> dict[str, float | None]:
        """Means over the images as plain floats (LPIPS: None when unavailable)."""
        return {name: None if values is None else float(values.mean()) for name, values in self.scores.items()}


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the ImageNet AlexNet weights (follows ``TORCH_HOME``)."""
    from torchvision.models import AlexNet_Weights

    name = Path(urlparse(AlexNet_Weights.DEFAULT.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS can run offline, else the reason and the fix, in one line."""
    path = alexnet_weights_path()
    if path.is_file():
        return None
    return (
        f"LPIPS needs the AlexNet weights at {path}, which are absent and never downloaded; "
        "copy alexnet-owt-7be5be79.pth there or point TORCH_HOME at a cache that has it"
    )


def recovery_metrics(pred: torch.Tensor, target: torch.Tensor, *, lpips: bool = True) -> RecoveryResult:
    """SSIM, PSNR and, if ``lpips`` and its weights are present, LPIPS per image of ``pred`` vs ``target``."""
    _check_images(pred, target)
    pred, target = pred.detach().float(), target.detach().float()
    reason = lpips_unavailable_reason() if lpips else "LPIPS not requested"
    scores: dict[str, np.ndarray | None] = {}
    for name in RECOVERY_METRICS:
        if name == "lpips":
            scores[name] = None if reason else _lpips(pred, target)
        else:
            scores[name] = SCORERS[name](pred, target).cpu().numpy()
    return RecoveryResult(scores, reason)


#: Per-image scorers of (pred, target) batches in [0, 1], by metric name (LPIPS, which needs its weights, apart).
SCORERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ssim": lambda pred, target: structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none"),
    "psnr": lambda pred, target: peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)),
}


def _lpips(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    net = _lpips_net(str(pred.device))
    with torch.no_grad():
        scores = [
            net(p, t, normalize=True).flatten()
            for p, t in zip(pred.split(_LPIPS_BATCH), target.split(_LPIPS_BATCH), strict=True)
        ]
    return torch.cat(scores).cpu().numpy()


@functools.lru_cache(maxsize=2)
def _lpips_net(device: str) -> torch.nn.Module:
    """torchmetrics' LPIPS network (AlexNet from the local cache, linear heads shipped with torchmetrics)."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).net.to(device)


def _check_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise MetricInputError(f"{name} must be a non-empty (N, 3, H, W) tensor, got {shape}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise MetricInputError(f"{name} has values outside [0, 1]", "clamp G's output to [0, 1] first")
    if pred.shape != target.shape:
        raise MetricInputError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape",
            "resize both to the model input size",
        )
