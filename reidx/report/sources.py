"""What a checkpoint trained on, and which test trials of a prepared dataset it may be evaluated on.

A checkpoint's ``meta`` names its training sources: ``meta["sources"]``, a list of dataset identities
(:func:`reidx.data.manifest.dataset_identity`) each with its ``trial`` (several training sources), or the one
``meta["dataset"]`` with ``meta["trial"]`` (one source), or, in a version 1 file, only the trainer's ``dataset``
and ``trial`` options. A test trial is refused when its identities may be training identities:

* on a dataset the checkpoint trained on (same directory or same manifest), every trial but its own split;
* on another dataset prepared from the same images (same source root; for a generated set, the same name and
  seed), every trial whose test identities meet the identities the checkpoint trained on.

Training-only datasets (no camera labels, so no query or gallery) are refused as test sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reidx.data.manifest import MANIFEST_NAME, DatasetInfo, read_dataset
from reidx.errors import ReidxError
from reidx.io import sha256_file

if TYPE_CHECKING:
    from reidx.report.evaluation import CheckpointInfo
    from reidx.report.plan import EvalDataset


@dataclass(frozen=True)
class TrainSource:
    """One dataset a checkpoint trained on: its resolved directory, manifest SHA-256 ("" when not recorded),
    dataset name and the split (trial) it trained on (None when not recorded)."""

    path: str
    manifest_sha256: str
    name: str
    trial: int | None

    @property
    def text(self) -> str:
        return self.name + ("" if self.trial is None else f" trial {self.trial}")

    @classmethod
    def from_identity(cls, identity: dict[str, Any], trial: Any) -> TrainSource:
        path = str(identity.get("path") or "")
        return cls(
            path=str(Path(path).resolve()) if path else "",
            manifest_sha256=str(identity.get("manifest_sha256") or ""),
            name=str(identity.get("name") or (Path(path).name if path else "?")),
            trial=int(trial) if isinstance(trial, int) else None,
        )


def training_sources(meta: dict[str, Any], training: dict[str, Any]) -> tuple[TrainSource, ...]:
    """The checkpoint's training sources, in training order (today's single dataset is a one-element list);
    empty when the checkpoint does not say."""
    listed = meta.get("sources")
    if isinstance(listed, list):
        return tuple(TrainSource.from_identity(s, s.get("trial")) for s in listed if isinstance(s, dict))
    identity = meta.get("dataset")
    trial = meta.get("trial", training.get("trial"))
    if isinstance(identity, dict):
        return (TrainSource.from_identity(identity, trial),)
    if isinstance(training.get("dataset"), str) and training["dataset"]:
        return (TrainSource.from_identity({"path": training["dataset"]}, trial),)
    return ()


def origin(info: DatasetInfo) -> tuple[str, ...]:
    """Where a prepared dataset's identities come from: its source root, or (generated sets) name and seed.
    Two datasets of one origin number the same people alike."""
    root = str(info.extra.get("root") or "")
    return ("root", str(Path(root).resolve())) if root else ("generated", info.dataset, str(info.seed))


def test_ids(frame: pd.DataFrame, trial: int) -> set[int]:
    """The identities of ``trial``'s queries and gallery."""
    rows = frame[(frame["split"] != "train") & (frame["trial"] == trial)]
    return {int(pid) for pid in rows["pid"].unique()}


@dataclass
class _Trained:
    """A source's dataset as read back: its origin and the identities of its training split."""

    origin: tuple[str, ...]
    ids: set[int]


def _read_source(source: TrainSource) -> _Trained | None:
    """The source's origin and training ids, from its directory; None when it is gone or re-prepared."""
    directory = Path(source.path) if source.path else None
    if directory is None or not (directory / MANIFEST_NAME).is_file():
        return None
    if source.manifest_sha256 and sha256_file(directory / MANIFEST_NAME) != source.manifest_sha256:
        return None
    frame, info = read_dataset(directory)
    train = frame[frame["split"] == "train"]
    if source.trial is not None:
        train = train[train["trial"] == source.trial]
    return _Trained(origin(info), {int(pid) for pid in train["pid"].unique()})


def allowed_trials(
    checkpoint: CheckpointInfo, dataset: EvalDataset, trials: list[int], known: dict[TrainSource, _Trained | None]
) -> tuple[list[int], str]:
    """The ``trials`` of ``dataset`` whose test identities the checkpoint never trained on, and why the others
    are left out ("" when none is). ``known`` keeps the sources read so far (one report reads each once)."""
    allowed, reasons = list(trials), []
    for source in checkpoint.sources:
        if source.path == str(dataset.directory.resolve()) or source.manifest_sha256 == dataset.manifest_sha256:
            if source.trial is not None:
                allowed = [t for t in allowed if t == source.trial]
                reasons.append(
                    f"trained on trial {source.trial} of {dataset.label} (other trials' test ids are its training ids)"
                )
            continue
        if source not in known:
            known[source] = _read_source(source)
        trained = known[source]
        if trained is None:
            if source.name != dataset.info.dataset:
                continue  # another dataset family: other people
            raise ReidxError(
                f"{checkpoint.label} trained on {source.name} at {source.path or '?'}, which is gone or was "
                f"re-prepared, so reidx cannot tell whether the test ids of {dataset.directory} are its training ids",
                f"put the training dataset back at {source.path or 'its path'}, or test on another dataset",
            )
        if trained.origin != origin(dataset.info):
            continue
        overlapping = [t for t in allowed if trained.ids & test_ids(dataset.frame, t)]
        if overlapping:
            allowed = [t for t in allowed if t not in overlapping]
            shared = len(trained.ids & test_ids(dataset.frame, overlapping[0]))
            reasons.append(
                f"trained on {source.text} ({source.path}), prepared from the same images as {dataset.label}: "
                f"{shared} of its training ids are test ids of trial {overlapping[0]}"
                + (f" (and of trial(s) {overlapping[1:]})" if len(overlapping) > 1 else "")
            )
    return allowed, "; ".join(reasons)
