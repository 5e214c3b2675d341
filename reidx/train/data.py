"""Training data: the HR training images of one trial of one or several sources, a held-out validation id
split, and the HR / LR training datasets (LR synthesised on the fly, each LR sample linked to its HR original).

Dataset items are indexed by sampler keys ``(index, seed)``; the seed decides the flip and the LR rate,
so items are reproducible in any worker.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from reidx.data.manifest import DatasetInfo, dataset_identity, read_dataset
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
    """One trial's HR training images of every source, relabelled 0..num_classes-1 (each source's identities
    their own labels, after the previous sources'), the held-out validation rows and what each source gave."""

    paths: list[str]
    labels: list[int]
    num_classes: int
    rates: list[int]
    validation: pd.DataFrame  # columns path, pid, camid (pids apart per source); empty when val_ids is 0
    sources: list[dict[str, Any]] = field(default_factory=list)  # one :func:`source_record` per source
    #: how the first testable source's test ranks (its ``protocol``), so validation scores held-out ids the same way
    protocol: str = "multi-shot"
    #: the camid every test query of that source comes from, when it takes them from one camera (VIPeR: cam_a)
    query_camera: int | None = None


def load_training_set(
    datasets: str | Path | Sequence[str | Path], trial: int, val_ids: float, seed: int
) -> TrainingSet:
    """The union of the training splits of ``datasets`` (one or several prepared directories).

    Each source's own identities are labelled after the previous sources' (a person of one set is never merged
    with a person of another), so the P×K sampler draws identities across sources. ``trial`` picks each source's
    split; a training-only source prepared with one trial uses it whatever ``trial``. Validation ids are held out
    per source with camera labels, ``val_ids`` of each (a fraction below 1, else a count; training-only sources
    have no second camera to query from, so all their ids train); their pids are shifted past the previous
    sources' so they stay apart, and they are ranked as the first testable source's test ranks (its protocol and
    query camera). Every source must have the same seen rates (the LR training images are drawn from them)."""
    paths = [datasets] if isinstance(datasets, str | Path) else list(datasets)
    if not paths:
        raise ReidxError("no training dataset given", "pass --dataset DIR (a directory made by `reidx prepare`)")
    parts = [source_rows(Path(path), trial) for path in paths]
    rates = [int(rate) for rate in parts[0][1].rates]
    for path, (_, info, _) in zip(paths[1:], parts[1:], strict=True):
        if [int(rate) for rate in info.rates] != rates:
            raise ReidxError(
                f"{path} was prepared with rates {','.join(map(str, info.rates))}, {paths[0]} with "
                f"{','.join(map(str, rates))}",
                "prepare every training source with the same --downsample",
            )
    check_no_shared_images(paths, [rows for rows, _, _ in parts])
    train_paths: list[str] = []
    labels: list[int] = []
    validation: list[pd.DataFrame] = []
    records: list[dict[str, Any]] = []
    pid_offset = next_label = 0
    for path, (rows, info, _) in zip(paths, parts, strict=True):
        ids = sorted(set(rows["pid"].tolist()))
        held_out = set() if info.training_only else validation_ids(ids, val_ids, seed)
        kept = rows[~rows["pid"].isin(held_out)].sort_values("path", kind="stable")
        relabel = {pid: next_label + label for label, pid in enumerate(sorted(set(kept["pid"].tolist())))}
        records.append(source_record(Path(path), info, rows, kept, held_out, next_label))
        next_label += len(relabel)
        train_paths += kept["path"].tolist()
        labels += [relabel[pid] for pid in kept["pid"]]
        held = rows[rows["pid"].isin(held_out)][["path", "pid", "camid"]]
        validation.append(held.assign(pid=held["pid"] + pid_offset))
        pid_offset += int(rows["pid"].max()) + 1
    testable = next((part for part in parts if not part[1].training_only), parts[0])
    return TrainingSet(
        paths=train_paths,
        labels=labels,
        num_classes=next_label,
        rates=rates,
        validation=pd.concat(validation).sort_values("path", kind="stable"),
        sources=records,
        protocol=testable[1].protocol,
        query_camera=testable[2],
    )


def check_no_shared_images(paths: Sequence[str | Path], rows: Sequence[pd.DataFrame]) -> None:
    """Two sources holding the same image (a set given twice, or prepared twice) would teach one person as two."""
    owner: dict[str, int] = {}
    for index, frame in enumerate(rows):
        for image in frame["path"]:
            if owner.setdefault(image, index) != index:
                raise ReidxError(
                    f"{paths[owner[image]]} and {paths[index]} both train on {image}: one person would get two labels",
                    "give each image set once (one --dataset per source)",
                )


def source_rows(directory: Path, trial: int) -> tuple[pd.DataFrame, DatasetInfo, int | None]:
    """The HR train rows of ``directory``'s ``trial`` (a one-trial training-only set: its only trial), its info,
    and the one camera its test queries come from (:func:`single_query_camera`)."""
    frame, info = read_dataset(directory)
    train = frame[(frame["split"] == "train") & (frame["rate"] == 1)]
    trials = sorted(set(train["trial"].tolist()))
    if info.training_only and len(trials) == 1:
        trial = trials[0]
    rows = train[train["trial"] == trial]
    if rows.empty:
        if not trials:
            raise ReidxError(
                f"{directory} has no training images in any trial",
                "prepare it with training ids (--test-ids below the number of identities)",
            )
        raise ReidxError(f"{directory} has no training images for trial {trial}", f"use --trial from {trials}")
    if not info.rates:
        raise ReidxError(f"{directory}/dataset.json lists no seen rates", "re-run `reidx prepare` with --downsample")
    return rows, info, single_query_camera(frame, trial)


def source_record(
    directory: Path, info: DatasetInfo, rows: pd.DataFrame, kept: pd.DataFrame, held_out: set[int], first_label: int
) -> dict[str, Any]:
    """What a checkpoint records about one training source: its identity (:func:`dataset_identity`), the trial
    used, the identities and images it trained on, its held-out validation ids and its first label."""
    return {
        **dataset_identity(directory),
        "training_only": info.training_only,
        "trial": int(rows["trial"].iloc[0]),
        "ids": int(kept["pid"].nunique()),
        "images": len(kept),
        "validation_ids": len(held_out),
        "first_label": first_label,
    }


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
