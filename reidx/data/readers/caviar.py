"""CAVIAR4REID (Cheng et al., BMVC 2011): genuine low-resolution queries.

Layout: one folder of ``PPPPIII.jpg`` (4-digit person id, 3-digit image index). 72 people, 1,220 images:
50 people seen by both cameras with 10 images per camera (50 x 20 + 22 x 10 = 1,220), 22 seen by one.

Camera rule: images 001-010 of a person come from one camera (camid 0), 011-020 from the other
(camid 1); a person with images from one camera only is a one-camera id. Which camera is the
low-resolution one is measured, not assumed: it is the camera whose images (of the two-camera ids) have
the smaller median pixel area.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import median

import numpy as np

from reidx.data.base import (
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    by_pid,
    existing_root,
    held_out_count,
    list_images,
    split_ids,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError
from reidx.images import image_size

NAME = re.compile(r"^(\d{4})(\d{3})$")
IMAGES_PER_CAMERA = 10


def image_area(path: str) -> int:
    """Pixel area from the image header (no decoding); unreadable files name themselves."""
    width, height = image_size(path)
    return width * height


def low_resolution_camera(images: list[Record], two_camera_ids: set[int]) -> int:
    """The camid whose images of two-camera ids have the smaller median area."""
    areas = {
        camid: median(image_area(r.path) for r in images if r.camid == camid and r.pid in two_camera_ids)
        for camid in (0, 1)
    }
    return min(areas, key=lambda camid: (areas[camid], camid))


@register_dataset("caviar")
class CAVIAR(DatasetReader):
    """CAVIAR: one-camera ids always train; two-camera ids split half/half; single-shot, 10 trials."""

    protocol = "single-shot"
    trials = 10
    layout = "a folder of PPPPIII.jpg images (CAVIAR4REID; also CAVIAR4REID/ or caviar4reid/ holding them)"
    rule = "test ids' low-resolution-camera images are queries at native size; their other-camera images gallery"
    uses = frozenset({"test_ids"})
    native_queries = True

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        for base in (root, root / "CAVIAR4REID", root / "caviar4reid"):
            paths = [p for p in list_images(base) if NAME.match(p.stem)] if base.is_dir() else []
            if paths:
                break
        else:
            raise ReidxError(
                f"{root} is not a caviar folder: expected PPPPIII.jpg images",
                f"point --root at {self.layout}",
            )
        records = []
        for path in paths:
            pid, index = (int(group) for group in NAME.match(path.stem).groups())
            if not 1 <= index <= 2 * IMAGES_PER_CAMERA:
                raise ReidxError(f"{path}: image index {index} is outside 1-20", "rename or remove the file")
            records.append(Record(str(path), pid, (index - 1) // IMAGES_PER_CAMERA))
        two_camera = {pid for pid, group in by_pid(records).items() if len({r.camid for r in group}) == 2}
        if not two_camera:
            raise ReidxError(f"no person in {base} has images 011-020 from the second camera", "check the folder")
        lr_camid = low_resolution_camera(records, two_camera)
        return Source(root=base, images=records, facts={"lr_camid": lr_camid, "two_camera_ids": len(two_camera)})

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        groups = by_pid(source.images)
        two_camera = sorted(pid for pid, group in groups.items() if len({r.camid for r in group}) == 2)
        n_test = held_out_count(len(two_camera), options.test_ids, len(two_camera) // 2)
        _, test_ids = split_ids(two_camera, n_test, rng)
        lr_camid = source.facts["lr_camid"]
        train = [r for r in source.images if r.pid not in test_ids]
        query = [r for r in source.images if r.pid in test_ids and r.camid == lr_camid]
        gallery = [r for r in source.images if r.pid in test_ids and r.camid != lr_camid]
        return Split(train, query, gallery)

    def lr_camera(self, source: Source, options: Options) -> str:
        lr_camid = int(source.facts["lr_camid"])
        first = lr_camid * IMAGES_PER_CAMERA + 1
        return f"camid {lr_camid} (images {first:03d}-{first + IMAGES_PER_CAMERA - 1:03d}; smaller median size)"
