"""`benchmarks/bench_study.py`: the study's plan, its skip/resume step, its tables, the GPU script's dry run, and
(with the real data) the whole pipeline in --quick mode, twice: the second sitting trains nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_study import ARMS, main, plan, tables, train_all, train_flags
from benchmarks.studies import DONE, reidx, train_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def test_the_plan_trains_every_arm_per_split_and_the_cross_row_once() -> None:
    keys = plan(5)
    assert len(keys) == 5 * 2 * 2 + 2 and keys[4:6] == [("cross", "baseline", None), ("cross", "cadnet", None)]
    assert plan(2, ("cadnet",)) == [("viper", "cadnet", 0), ("viper+3", "cadnet", 0), ("cross", "cadnet", None)] + [
        ("viper", "cadnet", 1),
        ("viper+3", "cadnet", 1),
    ]
    assert plan(5, ("cadnet",), ("viper",)) == [("viper", "cadnet", split) for split in range(5)]
    folders = {name: Path(f"/d/{name}") for name in ("viper", "3dpes", "sarc3d", "towncentre")}
    cross = train_flags(("cross", "cadnet", None), folders, "--epochs 1")
    assert "/d/viper" not in cross and "--trial" not in cross and cross.count("--dataset") == 3
    more = train_flags(("viper+3", "baseline", 3), folders, "--epochs 1")
    assert more.count("--dataset") == len(ARMS["viper+3"]) == 4 and "--trial 3 --model baseline" in more


def test_a_finished_run_is_skipped_and_a_started_one_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / DONE).touch()
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "last.pt").touch()
    assert not train_run(tmp_path / "done", "--epochs 1", dry_run=True)
    assert train_run(tmp_path / "started", "--epochs 1", dry_run=True, device="cuda")
    assert train_run(tmp_path / "new", "--epochs 1", dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"$ reidx --device cuda train --epochs 1 --out {tmp_path / 'started'} --resume",
        f"$ reidx train --epochs 1 --out {tmp_path / 'new'}",
    ]


def test_side_by_side_runs_log_beside_their_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--jobs 2``: every run of the plan is launched once, each child's output into RUN.log beside its folder
    (inside, `reidx train` would refuse the folder as not its own; a real child here: ``reidx --version`` with one
    thread), and a spent budget launches nothing."""
    log = tmp_path / "probe" / "split0.log"
    reidx("--version", threads=1, log=log)
    assert log.read_text().startswith("reidx ")
    folders = {name: tmp_path / name for name in ("viper", "3dpes", "sarc3d", "towncentre")}
    keys = plan(2)
    assert train_all(tmp_path / "runs", folders, keys, "--epochs 1", "", float("inf"), dry_run=True, jobs=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if " train " in line]
    assert len(lines) == len(keys) and all(line.endswith(("split0.log)", "split1.log)", "all.log)")) for line in lines)
    assert not train_all(tmp_path / "runs", folders, keys, "--epochs 1", "", -1.0, dry_run=True, jobs=2)


def test_tables_pair_cadnet_with_the_baseline_and_more_ids_with_viper_alone() -> None:
    values = {
        ("viper", "baseline"): {"LR R1": {0: 10.0, 1: 20.0}},
        ("viper", "cadnet"): {"LR R1": {0: 11.0, 1: 23.0}, "PSNR": {0: 21.0, 1: 21.0}, "D_F acc": {0: 0.8, 1: 0.6}},
        ("viper+3", "baseline"): {"LR R1": {0: 30.0, 1: 40.0}},
        ("bilinear", ""): {"PSNR": {0: 20.5, 1: 20.5}},
    }
    text = tables(values)
    assert "| viper | baseline | 2 | 15.0 ± 63.5 |" in text  # sd 7.07, t_{0.975,1} = 12.706
    assert "| 21.00 ± 0.00 | 0.70 ± 1.27 |" in text
    assert "| viper cadnet − viper baseline | 2 | +2.0 ± 12.7 |" in text and "+1.0 +3.0 |" in text
    assert "| viper+3 baseline − viper baseline | 2 | +20.0 ± 0.0 |" in text
    assert "| bilinear up-sampling (reference) |" in text and "viper+3 cadnet −" not in text


@pytest.mark.slow
def test_the_gpu_script_dry_run_prints_the_cuda_study(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "study"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_study.sh"), "--dry-run"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    trains = [line for line in result.stdout.splitlines() if " train " in line]
    assert len(trains) == len(plan(5)) and all(line.startswith("$ reidx --device cuda train") for line in trains)
    assert all("--input-size 256x128" in line and "--amp" in line for line in trains)
    assert sum(" report " in line for line in result.stdout.splitlines()) == 5
    assert not (tmp_path / "study").exists()  # a dry run writes nothing


def test_the_study_refuses_an_out_folder_inside_the_repository() -> None:
    with pytest.raises(SystemExit, match="inside the repository"):
        main(["--dry-run", "--out", str(ROOT / "study")])


@pytest.mark.slow
@pytest.mark.skipif(
    not all((DATA / name).is_dir() for name in ("VIPeR", "3DPeS", "SARC3D", "TownCentre")),
    reason=f"the real VIPeR, 3DPeS, SARC3D and TownCentre are not all in {DATA}",
)
def test_quick_study_on_the_real_sets_then_resumes_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--quick", "--models", "baseline", "--data-root", str(DATA), "--out", str(tmp_path / "study")]
    values = main([*args, "--jobs", "2"])  # the baseline alone (CAD-Net's columns: the tables test), 2 side by side
    ranked = {key: list(metrics["LR R1"]) for key, metrics in values.items() if key != ("bilinear", "")}
    assert ranked == {(arm, "baseline"): [0] for arm in ARMS} and list(values["bilinear", ""]["PSNR"]) == [0]
    capsys.readouterr()
    main(args)
    assert " train " not in capsys.readouterr().out
