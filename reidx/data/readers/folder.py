"""A user's own images, no code to write.

``--root`` is either

* a CSV file with columns ``path,pid,camid`` and optionally ``split`` (train / query / gallery); paths
  are relative to the CSV's folder unless absolute; or
* a folder of Market-style names ``PID_cCAM...jpg``: with ``query/`` plus ``bounding_box_test/`` or
  ``gallery/`` (and optionally ``bounding_box_train/`` or ``train/``) it is a standard split, otherwise
  every image below it (recursively) is split by :func:`~reidx.data.base.per_camera_query_split`.

pid -1 is junk and dropped (Market convention); camids are kept as written (the CSV's camid column, or
CAM of ``PID_cCAM``). Every CSV cell is checked (whole-number pids >= -1, camids >= 0, known splits, existing
files), each image may be listed once, and with a split train and test identities must differ.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reidx.data.base import (
    JUNK_PID,
    QUERY_RULE,
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    existing_root,
    held_out_count,
    ids_of,
    list_images,
    named_records,
    per_camera_query_split,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError, one_line

CSV_COLUMNS = ("path", "pid", "camid")
CSV_FIX = "give a CSV with columns path,pid,camid[,split]"
SPLIT_NAMES = ("train", "query", "gallery")
#: A whole number, optionally written with a zero fraction (``3`` or ``3.0``, not ``1.5``).
WHOLE_NUMBER = re.compile(r"^[+-]?\d{1,18}(\.0*)?$")
CELL_FIX = "pids are whole numbers (-1 marks junk) and camids whole numbers >= 0; fix that row"


def first_dir(base: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing ``base / name`` folder."""
    return next((base / name for name in names if (base / name).is_dir()), None)


def csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the ``(line number, cells)`` of every non-blank row."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReidxError(f"cannot read {csv_path}: {one_line(exc)}", CSV_FIX) from None
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise ReidxError(f"{csv_path} lacks columns {', '.join(missing)}", CSV_FIX)
    if not rows:
        raise ReidxError(f"{csv_path} has no rows", "list one image per row: path,pid,camid[,split]")
    return header, rows


def whole_number(csv_path: Path, line: int, column: str, text: str, low: int) -> int:
    """The integer in one CSV cell, at least ``low``; anything else names the file, line and cell."""
    text = text.strip()
    if not WHOLE_NUMBER.match(text):
        shown = repr(text) if text else "is empty, not"
        raise ReidxError(f"{csv_path}, line {line}: {column} {shown} is not a whole number", CELL_FIX)
    value = int(text.split(".")[0])
    if value < low:
        raise ReidxError(f"{csv_path}, line {line}: {column} {value} is below {low}", CELL_FIX)
    return value


def read_csv(csv_path: Path) -> Source:
    """Records (and the optional split) of a ``path,pid,camid[,split]`` CSV, every cell checked."""
    header, rows = csv_rows(csv_path)
    column = {name: header.index(name) for name in (*CSV_COLUMNS, "split") if name in header}
    has_split = "split" in column
    records: list[tuple[Record, str]] = []
    lines: dict[str, int] = {}
    for line, cells in rows:
        if len(cells) != len(header):
            raise ReidxError(
                f"{csv_path}, line {line} has {len(cells)} cells, the header {len(header)}",
                "give every row one cell per column (quote paths that hold commas)",
            )
        given = cells[column["path"]].strip()
        if not given:
            raise ReidxError(f"{csv_path}, line {line}: the path is empty", "give every row an image path")
        path = (csv_path.parent / given).resolve()
        if not path.is_file():
            raise ReidxError(
                f"{csv_path}, line {line}: image {given} not found", "paths are relative to the CSV's folder; fix it"
            )
        pid = whole_number(csv_path, line, "pid", cells[column["pid"]], JUNK_PID)
        camid = whole_number(csv_path, line, "camid", cells[column["camid"]], 0)
        split = cells[column["split"]].strip().lower() if has_split else ""
        if has_split and split not in SPLIT_NAMES:
            raise ReidxError(
                f"{csv_path}, line {line}: unknown split value {split!r}",
                "use train, query or gallery in every row, or drop the split column",
            )
        if str(path) in lines:
            raise ReidxError(
                f"{csv_path}: lines {lines[str(path)]} and {line} both list {given}",
                "list each image once (an image is train or test, never both)",
            )
        lines[str(path)] = line
        records.append((Record(str(path), pid, camid), split))
    kept = [(record, split) for record, split in records if record.pid != JUNK_PID]
    if not has_split:
        return Source(root=csv_path.parent, images=sorted(record for record, _ in kept))
    lists = {name: sorted(record for record, split in kept if split == name) for name in SPLIT_NAMES}
    if not lists["query"]:
        raise ReidxError(f"{csv_path} has no row with split=query", "mark the query images, or drop the split column")
    check_disjoint(
        csv_path, lists["train"], lists["query"] + lists["gallery"], lambda record: f"line {lines[record.path]}"
    )
    return Source(root=csv_path.parent, **lists)


def check_disjoint(
    where: Path, train: Sequence[Record], test: Sequence[Record], place: Callable[[Record], str]
) -> None:
    """Train and test identities must differ: a test person seen in training leaks test data."""
    test_by_pid: dict[int, Record] = {}
    for record in test:
        test_by_pid.setdefault(record.pid, record)
    for record in train:
        other = test_by_pid.get(record.pid)
        if other is not None:
            raise ReidxError(
                f"{where}: pid {record.pid} is both a train identity ({place(record)}) and a test identity "
                f"({place(other)}), so test images would leak into training",
                "give train and test people different pids, or drop the person from one side",
            )


@register_dataset("folder")
class Folder(DatasetReader):
    """A user's dataset, multi-shot, one trial."""

    layout = (
        "a CSV with path,pid,camid[,split], or a folder of PID_cCAM...jpg images "
        "(optionally query/ + bounding_box_test/ or gallery/ + bounding_box_train/ or train/)"
    )
    rule = (
        "the given query set (CSV split column or query/ folder) down-sampled, the gallery HR; without one, "
        f"{QUERY_RULE}"
    )
    uses = frozenset({"test_ids", "query_camera"})

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        if root.is_file():
            return read_csv(root)
        gallery_dir = first_dir(root, ("bounding_box_test", "gallery"))
        if (root / "query").is_dir() and gallery_dir is not None:
            train_dir = first_dir(root, ("bounding_box_train", "train"))
            source = Source(
                root=root,
                train=named_records(list_images(train_dir)) if train_dir else [],
                query=named_records(list_images(root / "query")),
                gallery=named_records(list_images(gallery_dir)),
            )
            test = source.query + source.gallery
            check_disjoint(root, source.train, test, lambda record: str(Path(record.path).relative_to(root)))
            return source
        images = named_records(list_images(root, recursive=True))
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
