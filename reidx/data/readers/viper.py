"""VIPeR (Gray et al., PETS 2007): the MLR-VIPeR protocol.

Layout: ``cam_a/`` and ``cam_b/`` holding ``NNN_ANGLE.bmp`` (NNN = identity, one image per camera).
camid 0 = cam_a, 1 = cam_b. pid = NNN (so pid 0 is a real person here, not a distractor).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from reidx.data.base import (
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    existing_root,
    find_layout,
    held_out_count,
    ids_of,
    list_images,
    split_ids,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError

CAMERAS = ("cam_a", "cam_b")
NAME = re.compile(r"^(\d+)_")


@register_dataset("viper")
class VIPeR(DatasetReader):
    """MLR-VIPeR: 316/316 random ids per trial (half/half for other sizes), single-shot, 10 trials."""

    protocol = "single-shot"
    trials = 10
    layout = "a folder with cam_a/ and cam_b/ holding NNN_ANGLE.bmp (or VIPeR/ holding them)"
    rule = "the query camera's image of each test id is the query (down-sampled); the other camera's is gallery"
    uses = frozenset({"test_ids", "query_camera"})

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        base = find_layout(root, (".", "VIPeR", "viper/VIPeR"), [f"{name}/" for name in CAMERAS], self)
        records = []
        for camid, camera in enumerate(CAMERAS):
            for path in list_images(base / camera):
                match = NAME.match(path.name)
                if match is None:
                    raise ReidxError(
                        f"cannot parse {path}: expected NNN_ANGLE.bmp, e.g. 000_45.bmp",
                        "rename or remove the file",
                    )
                records.append(Record(str(path), int(match.group(1)), camid))
        return Source(root=base, images=sorted(records))

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        ids = ids_of(source.images)
        train_ids, test_ids = split_ids(ids, held_out_count(len(ids), options.test_ids, len(ids) // 2), rng)
        query_camera = 0 if options.query_camera is None else options.query_camera
        train = [record for record in source.images if record.pid in train_ids]
        test = [record for record in source.images if record.pid in test_ids]
        query = [record for record in test if record.camid == query_camera]
        gallery = [record for record in test if record.camid != query_camera]
        return Split(train, query, gallery)

    def lr_camera(self, source: Source, options: Options) -> str:
        return CAMERAS[options.query_camera or 0]
