"""MLR-VIPeR on the real VIPeR images in ../shared/data/VIPeR (read in place, never copied); skipped
where that folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidx.data.manifest import read_dataset
from reidx.data.prepare import prepare_dataset

VIPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "VIPeR"

pytestmark = pytest.mark.skipif(not (VIPER / "cam_a").is_dir(), reason=f"real VIPeR not found at {VIPER}")


def test_real_viper_protocol(tmp_path: Path) -> None:
    info = prepare_dataset("viper", VIPER, tmp_path / "mlr-viper", rates=(2, 3, 4))
    frame, _ = read_dataset(tmp_path / "mlr-viper")
    assert info.trials == 10 and info.protocol == "single-shot" and info.lr_camera == "cam_a"
    for trial in range(10):
        rows = frame[frame["trial"] == trial]
        train, query, gallery = (rows[rows["split"] == name] for name in ("train", "query", "gallery"))
        assert train["pid"].nunique() == 316 and len(train) == 632
        assert query["pid"].nunique() == len(query) == 316 and gallery["pid"].nunique() == len(gallery) == 316
        assert query["source"].str.contains("/cam_a/").all() and gallery["path"].str.contains("/cam_b/").all()
        assert not set(query["pid"]) & set(train["pid"])
    assert frame.loc[frame["split"] != "query", "path"].str.startswith(str(VIPER.resolve())).all()
