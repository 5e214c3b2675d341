"""Validation on held-out TRAINING identities (never the test split).

Per held-out id with at least two cameras, one camera (seeded) gives the queries, each down-sampled at a
rate drawn from the seen rates; the other cameras' HR images form the gallery. Ranking is the multi-shot
protocol. For CAD-Net the recovered queries are also scored (PSNR against the HR originals, beside the
bilinear-upsampled LR input's PSNR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reidx.data.transforms import downsample, to_model_input, to_unit_range
from reidx.io import load_image
from reidx.metrics import evaluate_embeddings, recovery_metrics

#: Seed-sequence tag of the validation query camera and rate draws.
VAL_QUERY_STREAM = 102


@dataclass
class ValidationSet:
    """Query (LR, ``rate`` > 1) and gallery (HR, ``rate`` 1) entries from the held-out ids."""

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    rates: np.ndarray

    @property
    def is_query(self) -> np.ndarray:
        return self.rates > 1


def build_validation_set(rows: pd.DataFrame, rates: list[int], seed: int) -> ValidationSet | None:
    """The validation queries and gallery of ``rows`` (path, pid, camid); None if no id has 2 cameras."""
    rng = np.random.default_rng([seed, VAL_QUERY_STREAM])
    entry_rates = np.ones(len(rows), dtype=np.int64)
    pids, camids = rows["pid"].to_numpy(), rows["camid"].to_numpy()
    for pid in sorted(set(pids.tolist())):
        cameras = sorted(set(camids[pids == pid].tolist()))
        if len(cameras) < 2:
            continue
        query = (pids == pid) & (camids == cameras[rng.integers(len(cameras))])
        entry_rates[query] = rng.choice(rates, size=int(query.sum()))
    if not (entry_rates > 1).any():
        return None
    return ValidationSet(rows["path"].tolist(), pids, camids, entry_rates)


class ValidationImages(Dataset):
    """``(model input, HR target, index)``; the input is the LR image for queries."""

    def __init__(self, entries: ValidationSet, size: tuple[int, int]) -> None:
        self.entries, self.size = entries, size

    def __len__(self) -> int:
        return len(self.entries.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = load_image(self.entries.paths[index])
        target = to_model_input(image, self.size)
        rate = int(self.entries.rates[index])
        return (to_model_input(downsample(image, rate), self.size) if rate > 1 else target), target, index


@torch.no_grad()
def run_validation(
    model: nn.Module,
    entries: ValidationSet,
    size: tuple[int, int],
    device: torch.device,
    batch_size: int = 64,
    workers: int = 0,
) -> dict[str, float]:
    """Rank-1 and mAP (multi-shot) of LR queries against the HR gallery; PSNR of recovered queries."""
    was_training = model.training
    model.eval()
    loader = DataLoader(ValidationImages(entries, size), batch_size=batch_size, num_workers=workers)
    embeddings, recovered_psnr, bilinear_psnr = [], [], []
    query = torch.from_numpy(entries.is_query)
    for inputs, targets, indices in loader:
        out = model(inputs.to(device))
        embeddings.append(out["embedding"].float().cpu())  # the one `embed`, `search` and `report` use
        is_query = query[indices]
        if "recovered" in out and is_query.any():
            hr = to_unit_range(targets[is_query])
            recovered = to_unit_range(out["recovered"].float().cpu()[is_query])
            recovered_psnr.append(recovery_metrics(recovered, hr, lpips=False).psnr)
            bilinear_psnr.append(recovery_metrics(to_unit_range(inputs[is_query]), hr, lpips=False).psnr)
    model.train(was_training)
    metrics = {f"val_{name}": value for name, value in rank_queries(torch.cat(embeddings), entries).items()}
    if recovered_psnr:
        metrics["val_psnr"] = float(np.concatenate(recovered_psnr).mean())
        metrics["val_psnr_bilinear"] = float(np.concatenate(bilinear_psnr).mean())
    return metrics


def rank_queries(embeddings: torch.Tensor, entries: ValidationSet) -> dict[str, float]:
    """Multi-shot Rank-1 and mAP of the queries of ``entries`` against its gallery (``embeddings`` in order)."""
    q, g = entries.is_query, ~entries.is_query
    result = evaluate_embeddings(
        embeddings[torch.from_numpy(q)],
        embeddings[torch.from_numpy(g)],
        entries.pids[q],
        entries.pids[g],
        entries.camids[q],
        entries.camids[g],
        protocol="multi-shot",
    )
    return {"rank1": float(result["cmc"][0]), "mAP": float(result["mAP"])}
