"""The training-only readers on the real 3DPeS, SARC3D and TownCentre folders in ../shared/data (read in place,
never copied); skipped where a folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidx.data.base import Options
from reidx.data.registry import get_reader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("name", "folder", "ids", "images"),
    [("3dpes", "3DPeS", 193, 1012), ("sarc3d", "SARC3D", 50, 200), ("towncentre", "TownCentre", 222, 6967)],
)
def test_real_training_only_sets(tmp_path: Path, name: str, folder: str, ids: int, images: int) -> None:
    if not (DATA / folder).is_dir():
        pytest.skip(f"real {folder} not found at {DATA / folder}")
    reader = get_reader(name)
    source = reader.read(DATA / folder, tmp_path, Options())
    assert len({r.pid for r in source.images}) == ids and len(source.images) == images
    assert {r.camid for r in source.images} == {0}
    split = reader.split(source, np.random.default_rng(0), Options(frames_per_id=4))
    assert len({r.pid for r in split.train}) == ids and not split.query
    per_id = np.bincount([r.pid for r in split.train])
    assert per_id.max() <= 4
