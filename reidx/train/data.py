"""Training data: the HR training images of one trial of one or several sources, a held-out validation id
split, and the HR / LR training datasets (LR synthesised on the fly, each LR sample linked to its HR original).

Dataset items are indexed by sampler keys ``(index, seed)``; the seed decides the flip and the LR rate,
so items are reproducible in any worker.
"""

from __future__ import annotations

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
from reidx.train.sampler import Key

#: Seed-sequence tag of the validation id split.
VAL_SPLIT_STREAM = 101
#: [L] random horizontal flip probability (train only; no crop, no erasing).
FLIP_PROBABILITY = 0.5


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


def load_training_set(
    datasets: str | Path | Sequence[str | Path], trial: int, val_fraction: float, seed: int
) -> TrainingSet:
    """The union of the training splits of ``datasets`` (one or several prepared directories).

    Each source's own identities are labelled after the previous sources' (a person of one set is never merged
    with a person of another), so the P×K sampler draws identities across sources. ``trial`` picks each source's
    split; a training-only source prepared with one trial uses it whatever ``trial``. Validation ids are held out
    per source, ``val_fraction`` of each source with camera labels (training-only sources have no second camera
    to query from, so all their ids train); their pids are shifted past the previous sources' so they stay
    apart. Every source must have the same seen rates (the LR training images are drawn from them)."""
    paths = [datasets] if isinstance(datasets, str | Path) else list(datasets)
    if not paths:
        raise ReidxError("no training dataset given", "pass --dataset DIR (a directory made by `reidx prepare`)")
    parts = [source_rows(Path(path), trial) for path in paths]
    rates = [int(rate) for rate in parts[0][1].rates]
    for path, (_, info) in zip(paths[1:], parts[1:], strict=True):
        if [int(rate) for rate in info.rates] != rates:
            raise ReidxError(
                f"{path} was prepared with rates {','.join(map(str, info.rates))}, {paths[0]} with "
                f"{','.join(map(str, rates))}",
                "prepare every training source with the same --downsample",
            )
    check_no_shared_images(paths, [rows for rows, _ in parts])
    train_paths: list[str] = []
    labels: list[int] = []
    validation: list[pd.DataFrame] = []
    records: list[dict[str, Any]] = []
    pid_offset = next_label = 0
    for path, (rows, info) in zip(paths, parts, strict=True):
        ids = sorted(set(rows["pid"].tolist()))
        held_out = set() if info.training_only else validation_ids(ids, val_fraction, seed)
        kept = rows[~rows["pid"].isin(held_out)].sort_values("path", kind="stable")
        relabel = {pid: next_label + label for label, pid in enumerate(sorted(set(kept["pid"].tolist())))}
        records.append(source_record(Path(path), info, rows, kept, held_out, next_label))
        next_label += len(relabel)
        train_paths += kept["path"].tolist()
        labels += [relabel[pid] for pid in kept["pid"]]
        held = rows[rows["pid"].isin(held_out)][["path", "pid", "camid"]]
        validation.append(held.assign(pid=held["pid"] + pid_offset))
        pid_offset += int(rows["pid"].max()) + 1
    return TrainingSet(
        paths=train_paths,
        labels=labels,
        num_classes=next_label,
        rates=rates,
        validation=pd.concat(validation).sort_values("path", kind="stable"),
        sources=records,
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


def source_rows(directory: Path, trial: int) -> tuple[pd.DataFrame, DatasetInfo]:
    """The HR train rows of ``directory``'s ``trial`` (a one-trial training-only set: its only trial)."""
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
    return rows, info


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
