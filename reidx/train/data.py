"""Training data: the HR training images of one trial, a held-out validation id split, and the
HR / LR training datasets (LR synthesised on the fly, each LR sample linked to its HR original).

Dataset items are indexed by sampler keys ``(index, seed)``; the seed decides the flip and the LR rate,
so items are reproducible in any worker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from reidx.data.manifest import read_dataset
from reidx.data.transforms import downsample, to_model_input
from reidx.errors import ReidxError
from reidx.io import load_image
from reidx.train.sampler import Key

#: Seed-sequence tag of the validation id split.
VAL_SPLIT_STREAM = 101
#: [L] random horizontal flip probability (train only; no crop, no erasing).
FLIP_PROBABILITY = 0.5


@dataclass
class TrainingSet:
    """One trial's HR training images, relabelled 0..num_classes-1, and the held-out validation rows."""

    paths: list[str]
    labels: list[int]
    num_classes: int
    rates: list[int]
    validation: pd.DataFrame  # columns path, pid, camid (original pids); empty when val_ids is 0


def load_training_set(dataset: str | Path, trial: int, val_fraction: float, seed: int) -> TrainingSet:
    """Read ``dataset``'s train rows of ``trial`` and hold out ``val_fraction`` of its identities."""
    frame, info = read_dataset(dataset)
    train = frame[(frame["split"] == "train") & (frame["rate"] == 1)]
    rows = train[train["trial"] == trial]
    if rows.empty:
        trials = sorted(set(train["trial"].tolist()))
        if not trials:
            raise ReidxError(
                f"{dataset} has no training images in any trial",
                "prepare it with training ids (--test-ids below the number of identities)",
            )
        raise ReidxError(f"{dataset} has no training images for trial {trial}", f"use --trial from {trials}")
    if not info.rates:
        raise ReidxError(f"{dataset}/dataset.json lists no seen rates", "re-run `reidx prepare` with --downsample")
    ids = sorted(set(rows["pid"].tolist()))
    held_out = validation_ids(ids, val_fraction, seed)
    kept = rows[~rows["pid"].isin(held_out)].sort_values("path", kind="stable")
    relabel = {pid: label for label, pid in enumerate(sorted(set(kept["pid"].tolist())))}
    return TrainingSet(
        paths=kept["path"].tolist(),
        labels=[relabel[pid] for pid in kept["pid"]],
        num_classes=len(relabel),
        rates=[int(rate) for rate in info.rates],
        validation=rows[rows["pid"].isin(held_out)][["path", "pid", "camid"]].sort_values("path", kind="stable"),
    )


def validation_ids(ids: list[int], fraction: float, seed: int) -> set[int]:
    """A seeded ``fraction`` of ``ids`` (at least 2 when fraction > 0, so ranking means something)."""
    if fraction <= 0:
        return set()
    count = max(2, round(fraction * len(ids)))
    if len(ids) - count < 2:
        raise ReidxError(
            f"--val-ids {fraction} leaves {len(ids) - count} of {len(ids)} identities to train on",
            "use a smaller --val-ids, or --val-ids 0",
        )
    rng = np.random.default_rng([seed, VAL_SPLIT_STREAM])
    return {int(pid) for pid in rng.choice(ids, size=count, replace=False)}


def flipped(image: Image.Image, rng: random.Random) -> Image.Image:
    """Mirror ``image`` with probability :data:`FLIP_PROBABILITY`."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < FLIP_PROBABILITY else image


class HRImages(Dataset):
    """HR training samples: ``(x_H, label)``."""

    def __init__(self, paths: list[str], labels: list[int], size: tuple[int, int]) -> None:
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        index, seed = key
        image = flipped(load_image(self.paths[index]), random.Random(seed))
        return to_model_input(image, self.size), self.labels[index]


class LRImages(Dataset):
    """LR training samples: ``(x_L, x_H, label)``: x_L is the image down-sampled at a rate drawn
    uniformly from ``rates`` and bilinearly resized to the input size, x_H its HR original (same flip)."""

    def __init__(self, paths: list[str], labels: list[int], size: tuple[int, int], rates: list[int]) -> None:
        self.paths, self.labels, self.size, self.rates = paths, labels, size, rates

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = key
        rng = random.Random(seed)
        image = flipped(load_image(self.paths[index]), rng)
        rate = self.rates[rng.randrange(len(self.rates))]
        return (
            to_model_input(downsample(image, rate), self.size),
            to_model_input(image, self.size),
            self.labels[index],
        )
