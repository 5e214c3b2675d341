"""Training data: the HR training images of one trial, a held-out validation id split, and the
HR / LR training datasets (LR synthesised on the fly, each LR sample linked to its HR original).

Dataset items are indexed by sampler keys ``(index, seed)``; the seed decides the flip and the LR rate,
so items are reproducible in any worker.
"""

from __future__ import annotations

import math
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
from reidx.models.backbones import IMAGENET_MEAN
from reidx.train.sampler import Key

#: Seed-sequence tag of the validation id split.
VAL_SPLIT_STREAM = 101
#: [L] random horizontal flip probability (train only; no crop).
FLIP_PROBABILITY = 0.5
#: [B] random erasing (Zhong et al., as Luo et al. use it): the erased share of the image's area, the
#: rectangle's aspect ratio (drawn log-uniformly), tries before giving up, and the fill (ImageNet's mean pixel,
#: in the model's [-1, 1] range)
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)
ERASE_TRIES = 100
ERASE_FILL = tuple(2 * mean - 1 for mean in IMAGENET_MEAN)


@dataclass
class TrainingSet:
    """One trial's HR training images, relabelled 0..num_classes-1, and the held-out validation rows."""

    paths: list[str]
    labels: list[int]
    num_classes: int
    rates: list[int]
    validation: pd.DataFrame  # columns path, pid, camid (original pids); empty when val_ids is 0
    #: how the dataset's test ranks (its ``protocol``), so validation scores the held-out ids the same way
    protocol: str = "multi-shot"
    #: the camid every test query comes from, when the test takes its queries from one camera (VIPeR: cam_a)
    query_camera: int | None = None


def load_training_set(dataset: str | Path, trial: int, val_ids: float, seed: int) -> TrainingSet:
    """Read ``dataset``'s train rows of ``trial`` and hold out ``val_ids`` of its identities (a fraction below
    1, else a count)."""
    frame, info = read_dataset(dataset)
    train = frame[(frame["split"] == "train") & (frame["rate"] == 1)]
    rows = train[train["trial"] == trial]
    if rows.empty:
        trials = sorted(set(train["trial"].tolist()))
        raise ReidxError(f"{dataset} has no training images for trial {trial}", f"use --trial from {trials}")
    if not info.rates:
        raise ReidxError(f"{dataset}/dataset.json lists no seen rates", "re-run `reidx prepare` with --downsample")
    ids = sorted(set(rows["pid"].tolist()))
    held_out = validation_ids(ids, val_ids, seed)
    kept = rows[~rows["pid"].isin(held_out)].sort_values("path", kind="stable")
    relabel = {pid: label for label, pid in enumerate(sorted(set(kept["pid"].tolist())))}
    return TrainingSet(
        paths=kept["path"].tolist(),
        labels=[relabel[pid] for pid in kept["pid"]],
        num_classes=len(relabel),
        rates=[int(rate) for rate in info.rates],
        validation=rows[rows["pid"].isin(held_out)][["path", "pid", "camid"]].sort_values("path", kind="stable"),
        protocol=info.protocol,
        query_camera=single_query_camera(frame, trial),
    )


def single_query_camera(frame: pd.DataFrame, trial: int) -> int | None:
    """The one camid all of ``trial``'s test queries come from, or None when they come from several."""
    cameras = set(frame[(frame["split"] == "query") & (frame["trial"] == trial)]["camid"].tolist())
    return int(cameras.pop()) if len(cameras) == 1 else None


def validation_ids(ids: list[int], share: float, seed: int) -> set[int]:
    """A seeded ``share`` of ``ids``: a fraction when below 1, else a count (at least 2 when above 0, so
    ranking means something)."""
    if share <= 0:
        return set()
    count = max(2, round(share * len(ids)) if share < 1 else int(share))
    if len(ids) - count < 2:
        raise ReidxError(
            f"--val-ids {share:g} leaves {len(ids) - count} of {len(ids)} identities to train on",
            "use a smaller --val-ids, or --val-ids 0",
        )
    rng = np.random.default_rng([seed, VAL_SPLIT_STREAM])
    return {int(pid) for pid in rng.choice(ids, size=count, replace=False)}


def flipped(image: Image.Image, rng: random.Random) -> Image.Image:
    """Mirror ``image`` with probability :data:`FLIP_PROBABILITY`."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < FLIP_PROBABILITY else image


def erased(images: list[torch.Tensor], rng: random.Random, probability: float) -> list[torch.Tensor]:
    """With ``probability``, the same random rectangle of every (3, H, W) tensor of ``images`` (one size)
    filled with :data:`ERASE_FILL`; otherwise ``images`` unchanged. Draws nothing when ``probability`` is 0."""
    if probability <= 0 or rng.random() >= probability:
        return images
    height, width = images[0].shape[-2:]
    for _ in range(ERASE_TRIES):
        area = rng.uniform(*ERASE_AREA) * height * width
        aspect = math.exp(rng.uniform(*(math.log(bound) for bound in ERASE_ASPECT)))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = rng.randrange(height - h + 1), rng.randrange(width - w + 1)
            fill = torch.tensor(ERASE_FILL).view(3, 1, 1)
            result = [image.clone() for image in images]
            for image in result:
                image[:, top : top + h, left : left + w] = fill
            return result
    return images


class HRImages(Dataset):
    """HR training samples: ``(x_H, label)``; ``erasing`` is the random-erasing probability."""

    def __init__(self, paths: list[str], labels: list[int], size: tuple[int, int], erasing: float = 0.0) -> None:
        self.paths, self.labels, self.size, self.erasing = paths, labels, size, erasing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        index, seed = key
        rng = random.Random(seed)
        image = flipped(load_image(self.paths[index]), rng)
        (x_h,) = erased([to_model_input(image, self.size)], rng, self.erasing)
        return x_h, self.labels[index]


class LRImages(Dataset):
    """LR training samples: ``(x_L, x_H, label)``: x_L is the image down-sampled at a rate drawn
    uniformly from ``rates`` and bilinearly resized to the input size, x_H its HR original (same flip, and
    the same erased rectangle with probability ``erasing``)."""

    def __init__(
        self, paths: list[str], labels: list[int], size: tuple[int, int], rates: list[int], erasing: float = 0.0
    ) -> None:
        self.paths, self.labels, self.size, self.rates, self.erasing = paths, labels, size, rates, erasing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = key
        rng = random.Random(seed)
        image = flipped(load_image(self.paths[index]), rng)
        rate = self.rates[rng.randrange(len(self.rates))]
        x_l, x_h = to_model_input(downsample(image, rate), self.size), to_model_input(image, self.size)
        x_l, x_h = erased([x_l, x_h], rng, self.erasing)
        return x_l, x_h, self.labels[index]
