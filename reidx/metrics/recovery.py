"""Recovery quality between G's output and the HR original (protocols.md §3): SSIM, PSNR and LPIPS.

Both inputs are (N, 3, H, W) batches in [0, 1] at model input size. SSIM and PSNR come from torchmetrics
(Gaussian-window SSIM, data range 1). LPIPS (AlexNet) needs torchvision's ImageNet AlexNet weights in the
torch hub cache; reidx never downloads them, so without the file LPIPS is reported as unavailable, with
the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from reidx.metrics.checks import MetricInputError

#: The per-image scores of a :class:`RecoveryResult`, in the order the tables show them.
RECOVERY_METRICS = ("ssim", "psnr", "lpips")
_LPIPS_BATCH = 64


@dataclass(frozen=True)
class RecoveryResult:
    """Per-image scores; ``lpips`` is None when unavailable, and ``lpips_reason`` says why."""

    ssim: np.ndarray
    psnr: np.ndarray  # dB; inf for an image identical to its target
    lpips: np.ndarray | None
    lpips_reason: str | None

    @classmethod
    def concat(cls, results: Sequence[RecoveryResult]) -> RecoveryResult:
        """The scores of several batches as one result, in order (LPIPS and its reason from the first)."""
        if not results:
            raise MetricInputError("no recovery results to concatenate")
        lpips = None if results[0].lpips is None else np.concatenate([r.lpips for r in results])
        ssim, psnr = (np.concatenate([getattr(r, name) for r in results]) for name in ("ssim", "psnr"))
        return cls(ssim, psnr, lpips, results[0].lpips_reason)

    def summary(self) -> dict[str, float | None]:
        """Means over the images as plain floats (LPIPS: None when unavailable)."""
        scores = {name: getattr(self, name) for name in RECOVERY_METRICS}
        return {name: None if values is None else float(values.mean()) for name, values in scores.items()}


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
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    reason = lpips_unavailable_reason() if lpips else "LPIPS not requested"
    scores = None if reason else _lpips(pred, target)
    return RecoveryResult(ssim.cpu().numpy(), psnr.cpu().numpy(), scores, reason)


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
