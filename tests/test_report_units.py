"""reidx.report pieces without a model: published rows, markdown helpers, option parsing, the cache."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reidx.checkpoint import CheckpointFile
from reidx.data.manifest import DatasetInfo
from reidx.errors import ReidxError
from reidx.metrics import RANKING_METRICS, EvalResult, aggregate_trials, percent
from reidx.metrics.stats import mean_ci, paired_ci, t975
from reidx.provenance import written_kind
from reidx.report.cache import CACHE_DIR, MODEL_ENTRY, RECOVERY_ENTRY, ResultCache, dataset_fingerprint, ranking_entry
from reidx.report.evaluation import CheckpointInfo, initialisation, training_config
from reidx.report.export import render
from reidx.report.groups import group_checkpoints
from reidx.report.markdown import md_table
from reidx.report.plan import EvalDataset, QuerySet
from reidx.report.published import TABLE1, table1_key, table1_rows
from reidx.report.runner import DatasetSummary, Report, assemble, parse_modes, parse_trial
from reidx.report.sources import TrainSource, training_sources


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


def test_cache_keeps_images_as_png_files_it_records_and_drops(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "last.pt"
    image = tmp_path / "q.png"
    image.write_bytes(b"pixels")
    first = _dataset(tmp_path / "data", b"one", image)
    cache = ResultCache(checkpoint, "a" * 64)
    sample = Image.new("RGB", (4, 8), (10, 20, 30))
    saved = cache.save(RECOVERY_ENTRY, {"samples": [{"recovered": "sample-0"}]}, first, {"sample-0": sample})
    png = saved["images"]["sample-0"]
    assert png.parent == checkpoint.parent / CACHE_DIR and png.suffix == ".png" and written_kind(png) == "cache"
    record = json.loads((png.parent / png.name.replace("-sample-0.png", ".json")).read_text())
    assert record["images"] == {"sample-0": png.name} and record["payload"] == {"samples": [{"recovered": "sample-0"}]}
    assert cache.load(RECOVERY_ENTRY, first) == saved
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(sample))  # a PNG file, not base64 in the JSON

    second = _dataset(tmp_path / "data", b"two", image)
    cache.save(RECOVERY_ENTRY, {"samples": []}, second)
    assert not png.exists()  # the stale entry's image went with it
    user = checkpoint.parent / CACHE_DIR / f"{png.name.split('-')[0]}-mine.png"
    user.write_bytes(b"a user's file")
    cache.save(RECOVERY_ENTRY, {"samples": []}, first, {"sample-0": sample})
    assert user.read_bytes() == b"a user's file"  # never removed: reidx did not write it

    cache.load(RECOVERY_ENTRY, first)["images"]["sample-0"].unlink()
    assert cache.load(RECOVERY_ENTRY, first) is None  # an entry whose image is gone is a miss


def test_an_entry_of_the_previous_cache_version_is_a_miss(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "last.pt"
    image = tmp_path / "q.png"
    image.write_bytes(b"pixels")
    dataset = _dataset(tmp_path / "data", b"one", image)
    entry = ranking_entry("fused")
    old_key = hashlib.sha256(f"v2|{'a' * 64}|{dataset.fingerprint}|{entry}".encode()).hexdigest()[:24]
    folder = checkpoint.parent / CACHE_DIR
    folder.mkdir(parents=True)
    (folder / f"slot-{old_key}.json").write_text(json.dumps({"payload": {"0": {"examples": [], "sets": {}}}}))
    assert ResultCache(checkpoint, "a" * 64).load(entry, dataset) is None


# --- aggregation over trials, paired differences, rows and labels -------------------------------------


def test_mean_ci_is_the_student_t_interval_on_the_sample_sd() -> None:
    assert mean_ci([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(12.706 * 0.1))  # sd √0.02, / √2
    mean, half = mean_ci([0.5, 0.7, 0.9])  # sd 0.2, t_{0.975,2} = 4.303
    assert mean == pytest.approx(0.7) and half == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    assert mean_ci([0.3]) == (0.3, None)
    assert mean_ci([0.5] * 31)[1] == 0.0 and t975(31) == 1.96 and t975(30) == 2.042


def test_paired_ci_uses_shared_trials_in_numeric_order() -> None:
    a = {"trial 10": 0.5, "trial 2": 0.4, "trial 9": 0.3}
    b = {"trial 10": 0.3, "trial 2": 0.3, "trial 9": 0.3, "trial 1": 0.9}
    keys, mean, half = paired_ci(a, b)
    assert keys == ["trial 2", "trial 9", "trial 10"]
    assert mean == pytest.approx(0.1) and half == pytest.approx(4.303 * 0.1 / math.sqrt(3))  # diffs .1, 0, .2


def test_aggregate_trials_carries_the_95_percent_half_width() -> None:
    records = [_record(rank1) for rank1 in (0.5, 0.7)]
    merged = aggregate_trials(records)
    assert merged.rank1 == pytest.approx(0.6) and merged.std["rank1"] == pytest.approx(0.1)
    assert merged.ci95["rank1"] == pytest.approx(1.2706)  # 12.706 · sd (0.1414) / √2
    assert records[0].ci95["rank1"] == 0.0


def _record(rank1: float, mean_ap: float | None = None) -> EvalResult:
    return EvalResult(
        dataset="viper",
        protocol="single-shot",
        query_set="LR {2,3,4} mixed",
        rates=(2, 3, 4),
        checkpoint="x.pt",
        mode="fused",
        metrics={name: rank1 for name in RANKING_METRICS} | {"mAP": rank1 if mean_ap is None else mean_ap},
        map_definition="reciprocal rank",
        cmc=(rank1,) * 20,
        num_queries=10,
        num_valid_queries=10,
    )


def _checkpoint(name: str, trial: int | None, epochs: int, model: str = "baseline") -> CheckpointInfo:
    source = (TrainSource("/data/viper", "ab" * 32, "viper", trial),) if trial is not None else ()
    return CheckpointInfo(
        path=f"/runs/{name}/best.pt",
        fingerprint=f"{name:0<64}"[:64],
        model=model,
        arch="resnet18",
        modes=("fused",),
        can_recover=False,
        input_size=(64, 32),
        init="ImageNet",
        sources=source,
        recipe={"model": model, "epochs": epochs, "lr": 0.0003, "seed": 0},
    )


def _summary() -> DatasetSummary:
    sets = [QuerySet("mixed", "LR {2,3,4} mixed", (2, 3, 4), None, main=True)]
    return DatasetSummary("viper", Path("/data/viper"), "viper", "single-shot", [2, 3, 4], [], 10, [0, 1, 2], sets)


def test_runs_of_one_recipe_pool_by_split_and_labels_name_what_differs() -> None:
    checkpoints = [_checkpoint(f"base-t{t}", t, 10) for t in range(3)] + [_checkpoint("short-t0", 0, 4)]
    groups = group_checkpoints(checkpoints)
    assert [len(g.checkpoints) for g in groups] == [3, 1]
    assert groups[0].label == "base-t0/best.pt … (3 runs) [baseline, resnet18, ImageNet; epochs 10; trained on viper]"
    assert groups[1].label == "short-t0/best.pt [baseline, resnet18, ImageNet; epochs 4; trained on viper trial 0]"
    twice = group_checkpoints([_checkpoint("a", 0, 10), _checkpoint("b", 0, 10)])  # one split twice: not pooled
    assert [g.label for g in twice] == [
        "a/best.pt [baseline, resnet18, ImageNet; trained on viper trial 0]",
        "b/best.pt [baseline, resnet18, ImageNet; trained on viper trial 0]",
    ]
    unknown = group_checkpoints([_checkpoint("a", None, 10), _checkpoint("b", None, 10)])
    assert len(unknown) == 2  # no split recorded: nothing to pool by


def test_pooled_rows_and_paired_differences_equal_hand_computed_intervals() -> None:
    """Per trial Rank-1 (mAP): CAD-Net .5 .7 .9 (.3 .5 .7), baseline .4 .5 .9 (.2 .4 .6)."""
    cadnet = [replace(_checkpoint(f"cadnet-t{t}", t, 10, "cadnet"), fingerprint=f"{t}" * 64) for t in range(3)]
    baseline = [_checkpoint(f"base-t{t}", t, 10) for t in range(3)]
    report = Report(cadnet + baseline, [_summary()])
    report.groups = group_checkpoints(report.checkpoints)
    values = {"cadn": [(0.5, 0.3), (0.7, 0.5), (0.9, 0.7)], "base": [(0.4, 0.2), (0.5, 0.4), (0.9, 0.6)]}
    per_trial = {
        (c.path, "viper", "fused"): {t: {"sets": {"mixed": _record(*values[c.name[:4]][t]).to_dict()}}}
        for c in report.checkpoints
        for t in [c.sources[0].trial]
    }
    assemble(report, per_trial, {(c.path, "viper"): [c.sources[0].trial] for c in report.checkpoints})
    first, second = report.entries("viper")
    assert list(first.units) == ["trial 0", "trial 1", "trial 2"]
    assert first.result.rank1 == pytest.approx(0.7)
    assert first.result.ci95["rank1"] == pytest.approx(4.303 * 0.2 / math.sqrt(3))  # sd .2 over 3 trials
    assert first.pooling == (
        "mean ± 95% CI over 3 trials (0-2), one checkpoint per trial tested on its own split (Student t, 2 df)"
    )
    (difference,) = report.differences
    assert difference.group is report.groups[1] and difference.reference is report.groups[0]
    assert difference.per_trial == {
        f"trial {t}": pytest.approx({"rank1": d, "rank5": d, "rank10": d, "mAP": m, "mINP": d})
        for t, d, m in ((0, -0.1, -0.1), (1, -0.2, -0.1), (2, 0.0, -0.1))
    }
    assert difference.mean["rank1"] == pytest.approx(-0.1)
    assert difference.ci95["rank1"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))  # differences -.1 -.2 0: sd .1
    assert difference.ci95["mAP"] == pytest.approx(0.0)
    text = render(report, "md")
    assert "| **70.0 ± 49.7** / **70.0 ± 49.7** / **70.0 ± 49.7** | **50.0 ± 49.7** |" in text  # 4.303 · .2 / √3
    assert "| 60.0 ± 65.7 / 60.0 ± 65.7 / 60.0 ± 65.7 | 40.0 ± 49.7 |" in text  # sd √.07: 4.303 · .2646 / √3
    assert (
        "| -10.0 ± 24.8 | -10.0 ± 24.8 | -10.0 ± 24.8 | -10.0 ± 0.0 | -10.0 ± 24.8 | trial 0: -10.0 trial 1: -20.0 "
        "trial 2: +0.0 |" in text
    )
    assert "## Rank-1 by query rate" not in text  # one query set (as with genuine LR queries): no repeat


def test_training_sources_read_a_list_or_the_one_dataset_or_the_config() -> None:
    identity = {"path": "/d/viper", "manifest_sha256": "f" * 64, "name": "viper", "seed": 0, "rates": [2, 3, 4]}
    listed = training_sources({"sources": [identity | {"trial": 3}, identity | {"name": "3dpes", "trial": 0}]}, {})
    assert [s.text for s in listed] == ["viper trial 3", "3dpes trial 0"]
    (one,) = training_sources({"dataset": identity, "trial": 2}, {"trial": 5})
    assert (one.path, one.manifest_sha256, one.trial) == ("/d/viper", "f" * 64, 2)
    (old,) = training_sources({}, {"dataset": "/d/mlr-viper", "trial": 1})
    assert (old.name, old.trial, old.manifest_sha256) == ("mlr-viper", 1, "")
    assert training_sources({}, {}) == ()
