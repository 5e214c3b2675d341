"""The MLR dataset directory written by ``reidx prepare`` and read by every other command.

A dataset directory holds:

* ``manifest.parquet``: one row per image use, columns :data:`MANIFEST_COLUMNS`;
* ``dataset.json``: :class:`DatasetInfo` (dataset name, protocol, rates, trials, seed);
* the LR query images as PNG, at their small size, under ``lr/``.

HR images are referenced in place (absolute paths); LR paths are relative to the directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from reidx.errors import ReidxError
from reidx.io import atomic_path, sha256_file

MANIFEST_NAME = "manifest.parquet"
INFO_NAME = "dataset.json"

#: Column name -> dtype. ``query_set`` is "" outside the query split, else "mixed" (rates drawn from the
#: seen set), "r<N>" (every query at the unseen rate N) or "native" (genuine LR images, e.g. CAVIAR).
MANIFEST_COLUMNS: dict[str, str] = {
    "path": "string",
    "pid": "int64",
    "camid": "int64",
    "split": "string",
    "rate": "int64",
    "source": "string",
    "trial": "int64",
    "query_set": "string",
}
SPLITS = ("train", "query", "gallery")


@dataclass
class DatasetInfo:
    """What ``prepare`` built: enough to name the protocol on every reported number."""

    dataset: str
    protocol: str
    rates: list[int]
    unseen_rates: list[int] = field(default_factory=list)
    trials: int = 1
    seed: int = 0
    lr_camera: str = ""
    #: Identities without camera labels (3DPeS, SARC3D, TownCentre): train rows only, never a test set.
    training_only: bool = False
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def write_dataset(directory: Path, frame: pd.DataFrame, info: DatasetInfo) -> None:
    """Write manifest and info into ``directory`` (deterministic bytes, each file atomically)."""
    frame = normalise_manifest(frame)
    with atomic_path(directory / MANIFEST_NAME) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    with atomic_path(directory / INFO_NAME) as tmp:
        tmp.write_text(info.to_json())


def normalise_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in canonical order and dtypes; a missing column is a programming error."""
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    extra = [column for column in frame.columns if column not in MANIFEST_COLUMNS]
    ordered = frame[list(MANIFEST_COLUMNS) + extra].astype(MANIFEST_COLUMNS)
    return ordered.reset_index(drop=True)


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, DatasetInfo]:
    """Load a prepared dataset; ``path`` and ``source`` come back absolute."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ReidxError(
            f"{directory} has no {MANIFEST_NAME}", "build the dataset first with `reidx prepare --out DIR`"
        )
    try:
        frame = pd.read_parquet(manifest_path)
        info = DatasetInfo(**json.loads((directory / INFO_NAME).read_text()))
    except FileNotFoundError:
        raise ReidxError(f"{directory} has no {INFO_NAME}", "re-run `reidx prepare` for this directory") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise ReidxError(
            f"cannot read the dataset in {directory}: {exc}", "re-run `reidx prepare --overwrite`"
        ) from None
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ReidxError(f"{manifest_path} lacks columns {missing}", "re-run `reidx prepare --overwrite`")
    problem = column_problem(
        frame, {column: int if kind == "int64" else str for column, kind in MANIFEST_COLUMNS.items()}
    )
    if problem:
        raise ReidxError(f"cannot read {manifest_path}: {problem}", "re-run `reidx prepare --overwrite`")
    root = directory.resolve()
    for column in ("path", "source"):
        frame[column] = [p if Path(p).is_absolute() else str(root / p) for p in frame[column]]
    return frame, info


def column_problem(frame: pd.DataFrame, kinds: dict[str, type]) -> str | None:
    """What is wrong with the columns of ``frame`` that ``kinds`` names (missing, empty values, integers
    (``int``) or text (``str``) expected), None when nothing is."""
    missing = [column for column in kinds if column not in frame.columns]
    if missing:
        return f"columns {', '.join(missing)} are missing"
    for column, kind in kinds.items():
        values = frame[column]
        if values.isna().any():
            return f"column {column} has empty values"
        if kind is int and not pd.api.types.is_integer_dtype(values):
            return f"column {column} holds {values.dtype}, not integers"
        if kind is str and not all(isinstance(value, str) for value in values):
            return f"column {column} holds non-text values"
    return None


def check_testable(directory: str | Path, info: DatasetInfo) -> None:
    """Refuse a training-only dataset as a test set, in one line (``report`` and every evaluation call this)."""
    if info.training_only:
        raise ReidxError(
            f"{directory} ({info.dataset}) is for training only: its images have no camera labels, so it has "
            "no query or gallery to test on",
            "test on a dataset with cameras (e.g. one prepared from viper); train on this one with "
            "`reidx train --dataset`",
        )


def dataset_identity(directory: str | Path) -> dict:
    """What a checkpoint records about the dataset it trained on: the absolute path, the manifest's SHA-256,
    and dataset.json's name, seed and rates (a re-prepared folder differs in these)."""
    directory = Path(directory).resolve()
    info = DatasetInfo(**json.loads((directory / INFO_NAME).read_text()))
    return {
        "path": str(directory),
        "manifest_sha256": sha256_file(directory / MANIFEST_NAME),
        "name": info.dataset,
        "seed": info.seed,
        "rates": list(info.rates),
        "unseen_rates": list(info.unseen_rates),
    }
