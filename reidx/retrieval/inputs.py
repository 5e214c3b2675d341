"""What to embed: loose images and folders, or a split of a prepared dataset, as a metadata table.

Every table has at least ``path`` (absolute), ``pid`` and ``camid``, one row per distinct image in input
order. Loose images take pid and camid from Market-style names (``PID_cCAM...``, camid = CAM as written,
the rule of every dataset reader) and -1 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reidx.data.base import market_identity
from reidx.errors import ReidxError
from reidx.images import expand_images

if TYPE_CHECKING:
    import pandas as pd

UNKNOWN = -1


def identity_from_name(path: str | Path) -> tuple[int, int]:
    """``(pid, camid)`` from a Market-style file name, ``(-1, -1)`` when the name is not one."""
    return market_identity(path) or (UNKNOWN, UNKNOWN)


def images_table(items: Sequence[str | Path]) -> pd.DataFrame:
    """The metadata table of loose images and folders."""
    import pandas as pd  # here, not above: a query (reidx search) names its images without pandas

    paths = expand_images(items)
    identities = [identity_from_name(path) for path in paths]
    return pd.DataFrame(
        {
            "path": pd.Series([str(path) for path in paths], dtype="string"),
            "pid": pd.Series([pid for pid, _ in identities], dtype="int64"),
            "camid": pd.Series([camid for _, camid in identities], dtype="int64"),
        }
    )


def gallery_table(
    items: Sequence[str | Path], dataset: str | Path | None, split: str = "gallery", trial: int | None = None
) -> pd.DataFrame:
    """The table for ``reidx embed``: loose images and folders, or a split of a prepared dataset."""
    if items and dataset is not None:
        raise ReidxError("both images and --dataset were given", "embed one or the other")
    if dataset is not None:
        return dataset_table(dataset, split, trial)
    if not items:
        raise ReidxError("nothing to embed", "give images or folders, or --dataset DIR")
    return images_table(items)


def dataset_table(directory: str | Path, split: str = "gallery", trial: int | None = None) -> pd.DataFrame:
    """The rows of one split (and trial) of a prepared dataset, every manifest column kept.

    A dataset with several trials needs ``trial``; an image listed twice is kept once.
    """
    from reidx.data.manifest import SPLITS, read_dataset  # pandas: here, not above (see images_table)

    if split not in SPLITS:
        raise ReidxError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    frame, _ = read_dataset(directory)
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ReidxError(f"{directory} has no {split} images", "choose another --split")
    trials = sorted(int(t) for t in rows["trial"].unique())
    if trial is None and len(trials) > 1:
        raise ReidxError(f"{directory} has {len(trials)} trials", f"pass --trial N with N in {trials}")
    if trial is not None:
        if trial not in trials:
            raise ReidxError(f"{directory} has no trial {trial} in split {split}", f"use one of {trials}")
        rows = rows[rows["trial"] == trial]
    return rows.drop_duplicates("path").reset_index(drop=True)
