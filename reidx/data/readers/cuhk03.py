"""CUHK03 (Li et al., CVPR 2014), labeled and detected boxes merged: the MLR-CUHK03 protocol.

Two forms are read:

* the common extracted form: ``images_labeled/`` and/or ``images_detected/`` holding
  ``CAMPAIR_PID_VIEW_IDX.png`` (as torchreid writes them);
* the original ``cuhk-03.mat`` (MATLAB v7.3, i.e. HDF5): its ``labeled`` and ``detected`` cell arrays are
  extracted with h5py into that same form under the output directory's ``hr/``.

Identity = (camera pair, pid), stored as ``pid = CAMPAIR * 1000 + PID``; camid = VIEW - 1 (0 or 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from reidx.console import progress
from reidx.data.base import (
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    by_pid,
    existing_root,
    held_out_count,
    ids_of,
    list_images,
    split_ids,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError

IMAGE_FOLDERS = ("images_labeled", "images_detected")
MAT_NAME = "cuhk-03.mat"
NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.\w+$")
#: The protocol's split of the 1,467 identities (protocols.md §2).
TOTAL_IDS, TEST_IDS = 1467, 100
#: In the .mat cell arrays, images 1-5 of an identity come from view 1 and 6-10 from view 2.
VIEW_SIZE = 5


def read_image_folders(base: Path) -> list[Record]:
    """Records of every ``images_labeled``/``images_detected`` folder under ``base``."""
    records = []
    for folder in IMAGE_FOLDERS:
        for path in list_images(base / folder):
            match = NAME.match(path.name)
            if match is None or int(match.group(2)) >= 1000:
                raise ReidxError(
                    f"cannot parse {path}: expected CAMPAIR_PID_VIEW_IDX.png, e.g. 1_001_1_01.png",
                    "rename or remove the file",
                )
            campair, pid, view = (int(match.group(i)) for i in (1, 2, 3))
            records.append(Record(str(path), campair * 1000 + pid, view - 1))
    return sorted(records)


def mat_images(mat_path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(relative PNG path, HxWx3 uint8 image)`` for every non-empty cell of the .mat file."""
    import h5py

    try:
        with h5py.File(mat_path, "r") as mat:
            for kind in ("labeled", "detected"):
                for campair, pair_ref in enumerate(mat[kind][0], start=1):
                    cells = mat[pair_ref][()].T  # (identities, 10) object references
                    for pid, row in enumerate(cells, start=1):
                        for index, ref in enumerate(row, start=1):
                            image = mat[ref][()].T
                            if image.ndim == 3 and image.size:
                                view = 1 if index <= VIEW_SIZE else 2
                                name = f"images_{kind}/{campair}_{pid:03d}_{view}_{index:02d}.png"
                                yield name, np.ascontiguousarray(image, dtype=np.uint8)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ReidxError(
            f"cannot read {mat_path}: {exc}", "the file is not the CUHK03 release's cuhk-03.mat (v7.3)"
        ) from None


def extract_mat(mat_path: Path, workdir: Path, workers: int, batch: int = 256) -> None:
    """Write the .mat images as PNG under ``workdir``: HDF5 reads stay in this thread, PNG encoding runs
    in ``workers`` threads, ``batch`` images at a time (bounded memory)."""
    for folder in IMAGE_FOLDERS:
        (workdir / folder).mkdir(parents=True, exist_ok=True)

    def save(item: tuple[str, np.ndarray]) -> None:
        Image.fromarray(item[1]).save(workdir / item[0])

    pending: list[tuple[str, np.ndarray]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, progress(transient=True) as bar:
        task = bar.add_task(f"extract {mat_path.name}", total=None)
        for item in mat_images(mat_path):
            pending.append(item)
            if len(pending) == batch:
                list(pool.map(save, pending))
                bar.advance(task, len(pending))
                pending.clear()
        list(pool.map(save, pending))


@register_dataset("cuhk03")
class CUHK03(DatasetReader):
    """MLR-CUHK03: 1,367 train / 100 test ids per trial, single-shot, 10 trials."""

    protocol = "single-shot"
    trials = 10
    layout = (
        "a folder with images_labeled/ and/or images_detected/ (CAMPAIR_PID_VIEW_IDX.png), "
        "or with cuhk-03.mat (also cuhk03_release/cuhk-03.mat)"
    )
    rule = "per test id, one random camera's images are queries (down-sampled); the other camera's are gallery"
    uses = frozenset({"test_ids"})

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        for base in (root, root / "cuhk03"):
            if any((base / folder).is_dir() for folder in IMAGE_FOLDERS):
                return Source(root=base, images=read_image_folders(base))
        for mat_path in (
            root / MAT_NAME,
            root / "cuhk03_release" / MAT_NAME,
            root / "cuhk03/cuhk03_release" / MAT_NAME,
        ):
            if mat_path.is_file():
                extract_mat(mat_path, workdir, options.workers)
                return Source(root=workdir, images=read_image_folders(workdir))
        raise ReidxError(
            f"{root} is not a cuhk03 folder: expected images_labeled/, images_detected/ or {MAT_NAME}",
            f"point --root at {self.layout}",
        )

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        ids = ids_of(source.images)
        default = TEST_IDS if len(ids) >= TOTAL_IDS else max(1, round(len(ids) * TEST_IDS / TOTAL_IDS))
        train_ids, test_ids = split_ids(ids, held_out_count(len(ids), options.test_ids, default), rng)
        groups = by_pid(source.images)
        query, gallery = [], []
        for pid in sorted(test_ids):
            cameras = sorted({record.camid for record in groups[pid]})
            camera = cameras[int(rng.integers(len(cameras)))]
            for record in groups[pid]:
                (query if record.camid == camera else gallery).append(record)
        train = [record for record in source.images if record.pid in train_ids]
        return Split(train, query, gallery)

    def lr_camera(self, source: Source, options: Options) -> str:
        return "one camera per test id, drawn at random"
