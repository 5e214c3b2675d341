"""A user's own images, no code to write.

``--root`` is either

* a CSV file with columns ``path,pid,camid`` and optionally ``split`` (train / query / gallery); paths
  are relative to the CSV's folder unless absolute; or
* a folder of Market-style names ``PID_cCAM...jpg``: with ``query/`` plus ``bounding_box_test/`` or
  ``gallery/`` (and optionally ``bounding_box_train/`` or ``train/``) it is a standard split, otherwise
  every image below it (recursively) is split by :func:`~reidx.data.base.per_camera_query_split`.

pid -1 is junk and dropped (Market convention); camids are kept as written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reidx.data.base import (
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    existing_root,
    held_out_count,
    ids_of,
    list_images,
    parse_market_name,
    per_camera_query_split,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError

CSV_COLUMNS = ("path", "pid", "camid")
SPLIT_NAMES = ("train", "query", "gallery")
JUNK_PID = -1


def read_named_images(paths: list[Path]) -> list[Record]:
    """Records from Market-style names, junk dropped, camids as written."""
    records = [Record(str(path), *parse_market_name(path)) for path in paths]
    return [record for record in records if record.pid != JUNK_PID]


def first_dir(base: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing ``base / name`` folder."""
    return next((base / name for name in names if (base / name).is_dir()), None)


def read_csv(csv_path: Path) -> Source:
    """Records (and the optional split) of a ``path,pid,camid[,split]`` CSV."""
    try:
        table = pd.read_csv(csv_path, dtype={"path": str, "split": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReidxError(f"cannot read {csv_path}: {exc}", "give a CSV with columns path,pid,camid[,split]") from None
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise ReidxError(
            f"{csv_path} lacks columns {', '.join(missing)}", "give a CSV with columns path,pid,camid[,split]"
        )
    try:
        pids, camids = table["pid"].astype("int64"), table["camid"].astype("int64")
    except (ValueError, TypeError):
        raise ReidxError(f"{csv_path}: pid and camid must be integers", "fix the CSV") from None
    paths = [str((csv_path.parent / p).resolve()) for p in table["path"]]
    records = [Record(*row) for row in zip(paths, pids.tolist(), camids.tolist(), strict=True)]
    keep = [record.pid != JUNK_PID for record in records]
    if "split" not in table.columns:
        return Source(root=csv_path.parent, images=sorted(r for r, k in zip(records, keep, strict=True) if k))
    splits = table["split"].fillna("").str.strip().str.lower().tolist()
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise ReidxError(f"{csv_path}: unknown split values {unknown}", "use train, query or gallery")
    lists = {
        name: sorted(r for r, s, k in zip(records, splits, keep, strict=True) if k and s == name)
        for name in SPLIT_NAMES
    }
    if not lists["query"]:
        raise ReidxError(f"{csv_path} has no row with split=query", "mark the query images, or drop the split column")
    return Source(root=csv_path.parent, **lists)


@register_dataset("folder")
class Folder(DatasetReader):
    """A user's dataset, multi-shot, one trial."""

    layout = (
        "a CSV with path,pid,camid[,split], or a folder of PID_cCAM...jpg images "
        "(optionally query/ + bounding_box_test/ or gallery/ + bounding_box_train/ or train/)"
    )
    rule = (
        "the given query set (CSV split column or query/ folder) down-sampled, the gallery HR; without one, "
        "per test id and camera one random image is a query and the rest gallery"
    )
    uses = frozenset({"test_ids", "query_camera"})

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        if root.is_file():
            return read_csv(root)
        gallery_dir = first_dir(root, ("bounding_box_test", "gallery"))
        if (root / "query").is_dir() and gallery_dir is not None:
            train_dir = first_dir(root, ("bounding_box_train", "train"))
            return Source(
                root=root,
                train=read_named_images(list_images(train_dir)) if train_dir else [],
                query=read_named_images(list_images(root / "query")),
                gallery=read_named_images(list_images(gallery_dir)),
            )
        images = read_named_images(list_images(root, recursive=True))
        if not images:
            raise ReidxError(f"{root} holds no images named PID_cCAM...", f"point --root at {self.layout}")
        return Source(root=root, images=sorted(images))

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        if source.query:
            if options.test_ids is not None or options.query_camera is not None:
                raise ReidxError(f"{source.root} already has a query set", "drop --test-ids and --query-camera for it")
            return Split(source.train, source.query, source.gallery)
        ids = ids_of(source.images)
        n_test = held_out_count(len(ids), options.test_ids, len(ids) // 2)
        return per_camera_query_split(source.images, rng, n_test, options.query_camera)
