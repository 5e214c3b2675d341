"""reidx.report pieces without a model: published rows, markdown helpers, option parsing, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reidx.checkpoint import CheckpointFile
from reidx.data.manifest import DatasetInfo
from reidx.errors import ReidxError
from reidx.metrics import percent
from reidx.report.cache import CACHE_DIR, MODEL_ENTRY, RECOVERY_ENTRY, ResultCache, dataset_fingerprint, ranking_entry
from reidx.report.evaluation import EvalDataset, initialisation, training_config
from reidx.report.published import TABLE1, table1_key, table1_rows
from reidx.report.runner import parse_modes, parse_trial
from reidx.report.tables import md_table


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("market1501", "market1501"),
        ("MLR-Market-1501", "market1501"),
        ("dukemtmc", "dukemtmc"),
        ("DukeMTMC-reID", "dukemtmc"),
        ("cuhk03", "cuhk03"),
        ("mlr-viper", "viper"),
        ("caviar", "caviar"),
        ("synthetic", None),
        ("folder", None),
    ],
)
def test_table1_key_maps_dataset_names_to_paper_columns(name: str, key: str | None) -> None:
    assert table1_key(name) == key


def test_table1_rows_are_the_papers_numbers_for_the_asked_columns_only() -> None:
    rows = table1_rows(["viper", "market1501", "viper"])
    assert {row.method for row in rows} == set(TABLE1)  # every method reports VIPeR
    cadnet = next(row for row in rows if row.method == "CAD-Net")
    assert cadnet.ranks == {"viper": (43.1, 68.2, 77.5), "market1501": (83.7, 92.7, 95.8)}
    assert next(row for row in rows if row.method == "JUDEA").ranks["market1501"] is None
    assert [row.method for row in table1_rows(["market1501"])][0] == "SING"  # methods without Market dropped
    assert table1_rows(["synthetic"]) == []


def test_md_table_has_a_separator_and_equal_columns_and_escapes_pipes() -> None:
    lines = md_table(["a", "b"], [["1", "x|y"], ["3", "4"]]).splitlines()
    assert lines[1] == "| --- | --- |"
    assert lines[2] == "| 1 | x\\|y |"
    assert {line.count(" | ") for line in lines} == {1}


def test_percent_formats_mean_std_and_bold() -> None:
    assert percent(0.8372) == "83.7"
    assert percent(0.5, 0.0123) == "50.0 ± 1.2"
    assert percent(1.0, bold=True) == "**100.0**"


def test_parse_modes_and_trial() -> None:
    assert parse_modes(None) is None
    assert parse_modes("fused, g,fused") == ["fused", "g"]
    assert parse_trial("all") is None
    assert parse_trial("3") == 3
    with pytest.raises(ReidxError, match="unknown mode"):
        parse_modes("fused,h")
    with pytest.raises(ReidxError, match="--trial"):
        parse_trial("first")


def test_initialisation_from_the_checkpoint_or_the_run_record(tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.pt"

    def opened(state: dict, meta: dict | None = None) -> CheckpointFile:
        return CheckpointFile(checkpoint, meta or {}, "0" * 64, state)

    def init(state: dict, meta: dict | None = None) -> str:
        return initialisation(training_config(opened(state, meta)))

    assert init({"train": {"config": {"pretrained": False}}}) == "scratch"
    assert init({"train": {"config": {"pretrained": "/w/resnet50.pth"}}}) == "ImageNet"
    assert init({}) == "unknown"
    assert init({}, {"train_config": {"pretrained": False}}) == "scratch"
    (tmp_path / "config.json").write_text(json.dumps({"config": {"pretrained": True, "trial": 2}}))
    assert init({"epoch": 3}) == "ImageNet"  # a version 1 best.pt: the run record beside it
    assert training_config(opened({"epoch": 3}))["trial"] == 2
    assert init({}, {"train_config": {"pretrained": False}}) == "scratch"  # the checkpoint's own meta wins


def _dataset(directory: Path, manifest: bytes, image: Path) -> EvalDataset:
    """A stand-in dataset directory: manifest and info files, and a frame naming one query image."""
    directory.mkdir(exist_ok=True)
    (directory / "manifest.parquet").write_bytes(manifest)
    (directory / "dataset.json").write_text("{}")
    frame = pd.DataFrame({"path": [str(image)], "source": [str(image)], "split": ["query"]})
    info = DatasetInfo("synthetic", "multi-shot", [2])
    return EvalDataset(directory, frame, info, dataset_fingerprint(directory, frame), "synthetic")


def test_cache_round_trip_miss_on_change_and_stale_entry_dropped(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "last.pt"
    image = tmp_path / "q.png"
    image.write_bytes(b"pixels")
    first = _dataset(tmp_path / "data", b"one", image)
    cache = ResultCache(checkpoint, "a" * 64)
    assert cache.load(ranking_entry("fused"), first) is None
    cache.save(ranking_entry("fused"), {"x": 1}, first)
    assert cache.load(ranking_entry("fused"), first) == {"x": 1}
    assert cache.load(ranking_entry("g"), first) is None and cache.load(RECOVERY_ENTRY, first) is None
    assert ResultCache(checkpoint, "b" * 64).load(ranking_entry("fused"), first) is None  # other checkpoint bytes
    cache.save(MODEL_ENTRY, {"model": "cadnet"})
    assert cache.load(MODEL_ENTRY) == {"model": "cadnet"} and cache.load(MODEL_ENTRY, first) is None

    second = _dataset(tmp_path / "data", b"two", image)
    assert second.fingerprint != first.fingerprint and cache.load(ranking_entry("fused"), second) is None
    cache.save(ranking_entry("fused"), {"x": 2}, second)
    assert len(list((checkpoint.parent / CACHE_DIR).glob("*.json"))) == 2  # the stale entry is gone
    assert cache.load(ranking_entry("fused"), second) == {"x": 2}

    image.write_bytes(b"other pixels")  # an edited image is a changed dataset
    third = _dataset(tmp_path / "data", b"two", image)
    assert third.fingerprint != second.fingerprint and cache.load(ranking_entry("fused"), third) is None

    for entry in (checkpoint.parent / CACHE_DIR).glob("*.json"):
        entry.write_text("{broken")
    assert cache.load(ranking_entry("fused"), second) is None
