"""MLR construction (protocols.md §2): rates, LR sizes, HR gallery, splits per trial, determinism."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from reidx.data.manifest import MANIFEST_NAME, read_dataset
from reidx.data.prepare import parse_rates, prepare_dataset
from reidx.errors import ReidxError


def queries(frame: pd.DataFrame, query_set: str = "mixed") -> pd.DataFrame:
    return frame[(frame["split"] == "query") & (frame["query_set"] == query_set)]


def split_of(frame: pd.DataFrame, split: str, trial: int = 0) -> pd.DataFrame:
    return frame[(frame["split"] == split) & (frame["trial"] == trial)]


def test_market1501_mlr_rules(tmp_path: Path, market_tree) -> None:
    base = market_tree(tmp_path / "market1501")
    info = prepare_dataset("market1501", tmp_path / "market1501", tmp_path / "out", rates=(2, 3), unseen_rates=(8,))
    frame, _ = read_dataset(tmp_path / "out")
    assert info.protocol == "multi-shot" and info.trials == 1 and info.rates == [2, 3] and info.unseen_rates == [8]
    train, gallery = split_of(frame, "train"), split_of(frame, "gallery")
    assert len(train) == 16 and set(train["rate"]) == {1} and (train["path"] == train["source"]).all()
    assert set(train["path"]) == {str(p.resolve()) for p in (base / "bounding_box_train").iterdir()}
    assert (
        len(gallery) == 8 and set(gallery["rate"]) == {1} and 0 in set(gallery["pid"]) and -1 not in set(gallery["pid"])
    )
    mixed = queries(frame)
    assert len(mixed) == 4 and set(mixed["rate"]) <= {2, 3}
    assert (queries(frame, "r8")["rate"] == 8).all() and len(queries(frame, "r8")) == 4
    for row in pd.concat([mixed, queries(frame, "r8")]).itertuples():
        assert row.path.startswith(str((tmp_path / "out" / "lr").resolve()))
        with Image.open(row.path) as lr, Image.open(row.source) as hr:
            assert lr.format == "PNG"
            assert lr.size == (max(1, round(hr.width / row.rate)), max(1, round(hr.height / row.rate)))
    assert info.extra["valid_queries"] == {"mixed": [4, 4], "r8": [4, 4]}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp directory left


def test_same_arguments_give_byte_identical_manifests(tmp_path: Path, market_tree) -> None:
    market_tree(tmp_path / "m")
    for name in ("a", "b"):
        prepare_dataset("market1501", tmp_path / "m", tmp_path / name, rates=(2, 3, 4), seed=5)
    first, second = ((tmp_path / name / MANIFEST_NAME).read_bytes() for name in ("a", "b"))
    assert first == second
    assert (tmp_path / "a" / "dataset.json").read_text() == (tmp_path / "b" / "dataset.json").read_text()


def test_synthetic_is_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    sizes = {"ids": 8, "cameras": 2, "images_per_camera": 3}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare_dataset("synthetic", None, tmp_path / name, rates=(2, 3, 4), seed=seed, **sizes)
    manifests = [(tmp_path / name / MANIFEST_NAME).read_bytes() for name in "abc"]
    assert manifests[0] == manifests[1] != manifests[2]
    frame, info = read_dataset(tmp_path / "a")
    assert info.protocol == "multi-shot" and info.extra["generator"] == sizes
    assert frame["source"].str.startswith(str((tmp_path / "a" / "hr").resolve())).all()
    test_ids = set(queries(frame)["pid"])
    assert len(test_ids) == 4 and not test_ids & set(split_of(frame, "train")["pid"])
    assert len(queries(frame)) == 4 * 2  # one query per test id and camera
    assert len(split_of(frame, "gallery")) == 4 * 2 * 2


def test_cuhk03_trials_and_camera_rule(tmp_path: Path, cuhk03_tree) -> None:
    cuhk03_tree(tmp_path / "cuhk03")
    info = prepare_dataset("cuhk03", tmp_path / "cuhk03", tmp_path / "out", rates=(2, 3, 4), test_ids=2, trials=4)
    frame, _ = read_dataset(tmp_path / "out")
    assert info.protocol == "single-shot" and info.trials == 4 and sorted(frame["trial"].unique()) == [0, 1, 2, 3]
    splits = set()
    for trial in range(4):
        train, query, gallery = (split_of(frame, name, trial) for name in ("train", "query", "gallery"))
        assert len(set(train["pid"])) == 4 and set(query["pid"]) == set(gallery["pid"])
        assert len(set(query["pid"])) == 2 and not set(query["pid"]) & set(train["pid"])
        for pid, group in query.groupby("pid"):
            assert group["camid"].nunique() == 1 and len(group) == 3  # all images of one camera
            assert set(gallery[gallery["pid"] == pid]["camid"]) == {1 - group["camid"].iloc[0]}
        splits.add(frozenset(query["pid"]))
    assert len(splits) > 1  # each trial draws its own split


def test_cuhk03_default_trials_and_scaled_test_ids(tmp_path: Path, cuhk03_tree) -> None:
    cuhk03_tree(tmp_path / "c")
    info = prepare_dataset("cuhk03", tmp_path / "c", tmp_path / "out", rates=(2,))
    frame, _ = read_dataset(tmp_path / "out")
    assert info.trials == 10
    # 6 ids < 1,467: 100/1,467 of them, at least 1
    assert all(frame[(frame["split"] == "query") & (frame["trial"] == t)]["pid"].nunique() == 1 for t in range(10))


def test_viper_protocol(tmp_path: Path, viper_tree) -> None:
    viper_tree(tmp_path / "v", ids=10)
    info = prepare_dataset("viper", tmp_path / "v", tmp_path / "out", rates=(2, 3, 4))
    frame, _ = read_dataset(tmp_path / "out")
    assert info.protocol == "single-shot" and info.trials == 10 and info.lr_camera == "cam_a"
    for trial in range(10):
        train, query, gallery = (split_of(frame, name, trial) for name in ("train", "query", "gallery"))
        assert len(query) == len(gallery) == 5 and len(train) == 10
        assert set(query["camid"]) == {0} and set(gallery["camid"]) == {1} and set(gallery["rate"]) == {1}
        assert set(query["pid"]) == set(gallery["pid"]) and not set(query["pid"]) & set(train["pid"])
        assert set(query["rate"]) <= {2, 3, 4}


def test_caviar_native_queries(tmp_path: Path, caviar_tree) -> None:
    caviar_tree(tmp_path / "c")
    info = prepare_dataset("caviar", tmp_path / "c", tmp_path / "out", rates=(2, 3, 4), trials=3)
    frame, _ = read_dataset(tmp_path / "out")
    assert info.protocol == "single-shot" and "camid 1" in info.lr_camera
    assert not (tmp_path / "out" / "lr").exists()
    for trial in range(3):
        train, query, gallery = (split_of(frame, name, trial) for name in ("train", "query", "gallery"))
        assert set(query["query_set"]) == {"native"} and set(query["rate"]) == {1}
        assert (query["path"] == query["source"]).all() and set(query["camid"]) == {1} and set(gallery["camid"]) == {0}
        assert {7, 8} <= set(train["pid"])  # one-camera ids always train
        assert len(set(query["pid"])) == 3 and not set(query["pid"]) & set(train["pid"])
    with pytest.raises(ReidxError, match="--unseen does not apply"):
        prepare_dataset("caviar", tmp_path / "c", tmp_path / "out2", unseen_rates=(8,))


def test_folder_with_one_camera_fails_on_the_camera_rule(tmp_path: Path, write_image) -> None:
    for pid in (1, 2, 3, 4):
        for k in (1, 2):
            write_image(tmp_path / "mine" / f"{pid:04d}_c1_{k}.jpg")
    with pytest.raises(ReidxError, match="0 of 2 queries have a gallery image of the same person from another camera"):
        prepare_dataset("folder", tmp_path / "mine", tmp_path / "out", rates=(2,))
    assert not (tmp_path / "out").exists()


def test_folder_query_camera(tmp_path: Path, write_image) -> None:
    for pid in range(1, 7):
        for cam in (1, 2, 3):
            write_image(tmp_path / "mine" / f"{pid:04d}_c{cam}_0.jpg")
    prepare_dataset("folder", tmp_path / "mine", tmp_path / "out", rates=(2,), query_camera=3, test_ids=2)
    frame, _ = read_dataset(tmp_path / "out")
    assert set(queries(frame)["camid"]) == {3} and len(queries(frame)) == 2
    assert set(split_of(frame, "gallery")["camid"]) == {1, 2}


def test_truncated_image_is_named_and_nothing_is_left(tmp_path: Path, market_tree) -> None:
    base = market_tree(tmp_path / "m")
    bad = base / "bounding_box_test" / "0005_c2s2_000020_01.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ReidxError, match="0005_c2s2_000020_01.jpg"):
        prepare_dataset("market1501", base, tmp_path / "out", rates=(2,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_existing_output_needs_overwrite(tmp_path: Path, viper_tree) -> None:
    viper_tree(tmp_path / "v", ids=4)
    prepare_dataset("viper", tmp_path / "v", tmp_path / "out", trials=1)
    with pytest.raises(ReidxError, match="already holds a prepared dataset.*--overwrite"):
        prepare_dataset("viper", tmp_path / "v", tmp_path / "out", trials=1, seed=1)
    prepare_dataset("viper", tmp_path / "v", tmp_path / "out", trials=1, seed=1, overwrite=True)
    assert read_dataset(tmp_path / "out")[1].seed == 1


def test_overwrite_never_replaces_a_folder_reidx_did_not_write(tmp_path: Path, viper_tree) -> None:
    viper_tree(tmp_path / "v", ids=4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(ReidxError, match="not written by reidx") as error:
            prepare_dataset("viper", tmp_path / "v", tmp_path / "out", trials=1, overwrite=overwrite)
        assert "--overwrite" not in error.value.line()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "is empty"), ("1,2", "rates must be integers >= 2"), ("2,x", "rates must be integers >= 2")],
)
def test_bad_rates(text: str, message: str) -> None:
    with pytest.raises(ReidxError, match=message):
        parse_rates(text)
    assert parse_rates(" 4, 2,2 ") == (2, 4)


def test_options_a_dataset_does_not_use_are_refused(tmp_path: Path, market_tree) -> None:
    market_tree(tmp_path / "m")
    with pytest.raises(ReidxError, match="--test-ids does not apply to market1501"):
        prepare_dataset("market1501", tmp_path / "m", tmp_path / "out", test_ids=3)
    with pytest.raises(ReidxError, match="--out .* lies inside the dataset root"):
        prepare_dataset("market1501", tmp_path / "m", tmp_path / "m" / "out")
