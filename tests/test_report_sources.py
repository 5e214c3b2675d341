"""``reidx report`` across datasets and splits, through the CLI, on real (tiny) training runs: cross-dataset rows
name their sources and test set, one run per split pools into mean ± 95% CI with paired differences, and a test
set whose identities a run trained on, or a training-only dataset, is refused in one line."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from reidx.data.manifest import read_dataset
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.train import run_training
from tests.test_report_end_to_end import T975, cell, expected, table
from tests.tiny import TINY


@dataclass
class Runs:
    root: Path
    a: Path  # synthetic, seed 0, 8 ids: the runs train on it
    b: Path  # synthetic, seed 1: other people
    a_again: Path  # synthetic, seed 0, 10 ids: the same people as a, split otherwise
    runs: Path  # e0-t0, e0-t1 (untrained, trials 0 and 1) and e1-t0 (1 epoch, trial 0)

    def last(self, name: str) -> Path:
        return self.runs / name / "last.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("report-sources")
    sizes = {"cameras": 2, "images_per_camera": 2, "trials": 2, "workers": 1}
    prepare_dataset("synthetic", None, root / "a", ids=8, seed=0, **sizes)
    prepare_dataset("synthetic", None, root / "b", ids=8, seed=1, **sizes)
    prepare_dataset("synthetic", None, root / "a-again", ids=10, seed=0, **sizes)
    for name, trial, epochs in (("e0-t0", 0, 0), ("e0-t1", 1, 0), ("e1-t0", 0, 1)):
        options = {"dataset": str(root / "a"), "trial": trial, "epochs": epochs, "model": "baseline", "val_ids": 0}
        run_training(root / "runs" / name, options | TINY, devices=Devices("cpu"), show_progress=False)
    return Runs(root, root / "a", root / "b", root / "a-again", root / "runs")


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_cross_dataset_row_names_its_sources_and_is_evaluated_on_every_test_trial(runs: Runs, run_cli) -> None:
    out = runs.root / "cross.json"
    args = ["--modes", "fused", "--workers", "0", "--format", "json", "--out", out]
    code, _, err = run_cli("report", "--checkpoint", runs.last("e1-t0"), "--dataset", runs.b, *args)
    assert code == 0, err
    document = json.loads(out.read_text())
    (row,) = document["rows"]
    assert row["sources"] == "synthetic (a) trial 0"  # a and b are both "synthetic": the folder tells them apart
    assert row["label"] == "e1-t0/last.pt [baseline, resnet18, scratch; trained on synthetic (a) trial 0]"
    mixed = next(e for e in document["ranking"] if e["set"] == "mixed")
    assert mixed["dataset_label"] == "synthetic" and mixed["sources"] == row["sources"]
    assert list(mixed["per_trial"]) == ["trial 0", "trial 1"]
    values = [expected(runs.last("e1-t0"), runs.b, "fused", "mixed", t)[0] for t in (0, 1)]
    assert [mixed["per_trial"][f"trial {t}"]["rank1"] for t in (0, 1)] == pytest.approx(values)
    assert mixed["pooling"] == "mean ± 95% CI over 2 test trials (0, 1) of one checkpoint (Student t, 1 df)"
    assert mixed["ci95"]["rank1"] == pytest.approx(T975[1] * abs(values[0] - values[1]) / 2)  # t · sd / √2


def test_one_run_per_split_is_one_row_with_its_interval_and_the_paired_difference(runs: Runs, run_cli) -> None:
    out = runs.root / "pooled.md"
    code, _, err = run_cli("report", "--checkpoint", runs.runs, "--dataset", runs.a, "--modes", "fused", "--out", out)
    assert code == 0, err
    text = out.read_text()
    main = table(text, "Cross-resolution re-ID")
    pooled = "e0-t0/last.pt … (2 runs) [baseline, resnet18, scratch; epochs 0; trained on synthetic]"
    single = "e1-t0/last.pt [baseline, resnet18, scratch; epochs 1; trained on synthetic trial 0]"
    assert [row[0] for row in main.rows] == [pooled, single]
    per_trial = [expected(runs.last(name), runs.a, "fused", "mixed", t) for name, t in (("e0-t0", 0), ("e0-t1", 1))]
    r1, r5, r10, mean_ap = (cell([values[i] for values in per_trial], 2) for i in range(4))
    assert main.value(pooled, "fused", "synthetic R1 / R5 / R10") == f"{r1} / {r5} / {r10}"
    assert main.value(pooled, "fused", "synthetic mAP") == mean_ap
    own = "mean ± 95% CI over 2 trials (0, 1), one checkpoint per trial tested on its own split (Student t, 1 df)"
    assert own in main.caption and "e1-t0/last.pt: trial 0 of 2" in main.caption
    paired = table(text, "Paired differences: synthetic")
    trained = expected(runs.last("e1-t0"), runs.a, "fused", "mixed", 0)
    delta = [100 * (trained[i] - per_trial[0][i]) for i in range(4)]
    assert paired.value(single, "fused", "pairs") == "1"
    assert paired.value(single, "fused", "Δ R1") == f"{delta[0]:+.1f}"
    assert paired.value(single, "fused", "Δ mAP") == f"{delta[3]:+.1f}"
    assert paired.value(single, "fused", "Δ R1 per trial") == f"trial 0: {delta[0]:+.1f}"
    assert f"reference: {pooled}" in paired.caption


def test_a_test_set_that_overlaps_the_training_ids_is_refused_in_one_line(runs: Runs, run_cli) -> None:
    code, _, err = run_cli("report", "--checkpoint", runs.last("e0-t1"), "--dataset", runs.a, "--trial", "0")
    assert code == 1 and "trained on trial 1 of synthetic" in one_line(err)

    frame, _ = read_dataset(runs.a)
    trained = set(frame.loc[(frame["split"] == "train") & (frame["trial"] == 0), "pid"])
    again, _ = read_dataset(runs.a_again)
    for trial in (0, 1):  # the other preparation's test ids meet the run's training ids in both trials
        assert trained & set(again.loc[(again["split"] != "train") & (again["trial"] == trial), "pid"])
    code, _, err = run_cli("report", "--checkpoint", runs.last("e1-t0"), "--dataset", runs.a_again)
    line = one_line(err)
    assert code == 1 and "prepared from the same images" in line and "are test ids of trial 0" in line


def test_a_training_only_dataset_is_refused_as_a_test_set(runs: Runs, run_cli) -> None:
    training_only = runs.root / "training-only"
    shutil.copytree(runs.b, training_only)
    info = json.loads((training_only / "dataset.json").read_text())
    (training_only / "dataset.json").write_text(json.dumps(info | {"training_only": True}))
    code, _, err = run_cli("report", "--checkpoint", runs.last("e1-t0"), "--dataset", training_only)
    assert code == 1 and "is for training only" in one_line(err)


def test_native_low_resolution_queries_get_no_rate_section(runs: Runs, run_cli, caviar_tree, tmp_path: Path) -> None:
    """CAVIAR's queries are genuine LR images (one query set): the rate section would repeat the main table."""
    caviar = tmp_path / "caviar"
    prepare_dataset("caviar", caviar_tree(tmp_path / "raw"), caviar, trials=2, workers=1)
    out = tmp_path / "caviar.md"
    code, _, err = run_cli(
        "report", "--checkpoint", runs.last("e1-t0"), "--dataset", caviar, "--modes", "fused", "--workers", "0",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    text = out.read_text()
    assert "## Cross-resolution re-ID" in text and "## Rank-1 by query rate" not in text
    main = table(text, "Cross-resolution re-ID")
    assert main.header[2] == "caviar R1 / R5 / R10" and "queries LR native" in main.caption
    assert main.rows[0][0].endswith("trained on synthetic trial 0]")


def test_a_folder_without_runs_is_one_line(runs: Runs, run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("report", "--checkpoint", tmp_path, "--dataset", runs.b)
    assert code == 1 and "holds no run (no last.pt or best.pt below it)" in one_line(err)
