"""Resuming safely: the run's own dataset only, from any directory, after a kill -9 at any point (even in the
first save), with stale temporaries cleaned and never two writers in one run directory."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from reidx.checkpoint import open_checkpoint, save_checkpoint
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.models.loading import build_network, open_model_checkpoint
from reidx.provenance import registration
from reidx.train import run_training
from tests.tiny import CLI_TINY, TINY

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    for name, ids in (("a", 8), ("b", 6)):
        prepare_dataset("synthetic", None, root / name, ids=ids, cameras=2, images_per_camera=2, workers=2)
    return root


def untrained_run(dataset: Path, run: Path) -> Path:
    run_training(
        run, {"dataset": str(dataset), "epochs": 0, "val_ids": 0, **TINY}, devices=Devices("cpu"), show_progress=False
    )
    return run


def tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
    }


def fails(run_cli: Cli, *args: object, match: str) -> str:
    code, _, err = run_cli("--device", "cpu", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_resume_refuses_another_dataset_and_a_re_prepared_one(run_cli: Cli, datasets: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(datasets / "a", data)
    run = untrained_run(data, tmp_path / "run")
    before = tree(run)
    line = fails(run_cli, "train", "--out", run, "--resume", "--dataset", datasets / "b", match="is another dataset")
    assert str(data.resolve()) in line and str((datasets / "b").resolve()) in line
    assert tree(run) == before
    prepare_dataset("synthetic", None, data, ids=8, cameras=2, images_per_camera=2, workers=2, seed=1, overwrite=True)
    line = fails(run_cli, "train", "--out", run, "--resume", "--epochs", "1", match="is another dataset")
    assert "seed 0" in line and "seed 1" in line and line.count(str(data.resolve())) == 2
    assert tree(run) == before


def test_resume_from_another_directory_after_a_relative_dataset(
    run_cli: Cli, datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(datasets / "a", tmp_path / "data")
    monkeypatch.chdir(tmp_path / "here")
    args = ["--dataset", "../data", "--out", "../run", "--epochs", "0", "--val-ids", "0", *CLI_TINY]
    code, _, err = run_cli("--device", "cpu", "train", *args)
    assert code == 0, err
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["config"]["dataset"] == str((tmp_path / "data").resolve())
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run_cli("--device", "cpu", "train", "--out", run, "--resume", "--epochs", "1")
    assert code == 0, err
    assert open_checkpoint(run / "last.pt").meta["epoch"] == 1


def test_a_version_1_run_with_a_relative_dataset_names_the_fix(run_cli: Cli, datasets: Path, tmp_path: Path) -> None:
    run = untrained_run(datasets / "a", tmp_path / "run")
    state = open_checkpoint(run / "last.pt").state
    state["train"]["config"]["dataset"] = "data/a"  # how version 1 recorded `--dataset data/a`
    old = {key: value for key, value in state.items() if key != "meta"} | {"version": 1}
    torch.save(old, run / "last.pt")
    record = json.loads((run / "config.json").read_text())
    del record["run_id"]  # nor did version 1 give runs an id
    (run / "config.json").write_text(json.dumps(record))
    fails(run_cli, "train", "--out", run, "--resume", "--epochs", "1", match="pass --dataset")
    code, _, err = run_cli(
        "--device", "cpu", "train", "--out", run, "--resume", "--dataset", datasets / "a", "--epochs", "1"
    )
    assert code == 0, err
    run_id = json.loads((run / "config.json").read_text())["run_id"]  # the old run has an id from now on
    assert open_checkpoint(run / "last.pt").meta["run_id"] == run_id


@pytest.mark.slow
def test_a_run_from_before_several_sources_resumes_on_its_one_dataset(
    run_cli: Cli, datasets: Path, tmp_path: Path
) -> None:
    run = untrained_run(datasets / "a", tmp_path / "run")
    state = open_checkpoint(run / "last.pt").state
    assert [source["path"] for source in state["meta"].pop("sources")] == [state["meta"]["dataset"]["path"]]
    torch.save(state, run / "last.pt")  # meta as one-source runs wrote it: dataset and trial, no sources
    fails(run_cli, "train", "--out", run, "--resume", "--dataset", datasets / "b", match="is another dataset")
    code, _, err = run_cli("--device", "cpu", "train", "--out", run, "--resume", "--epochs", "1")
    assert code == 0, err  # one epoch, so that the resumed run writes its checkpoint again
    assert open_checkpoint(run / "last.pt").meta["sources"][0]["path"] == str((datasets / "a").resolve())


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_run_killed_in_its_first_save_restarts_and_loses_its_temporaries(
    run_cli: Cli, datasets: Path, tmp_path: Path
) -> None:
    reference = untrained_run(datasets / "a", tmp_path / "reference")
    for resume in (["--resume"], []):
        run = tmp_path / f"killed{len(resume)}"
        run.mkdir()
        shutil.copyfile(reference / "config.json", run / "config.json")
        stale = run / f".last.pt.{dead_pid()}-k3j_x9a2.tmp"  # what atomic_path leaves on kill -9 ...
        stale.write_bytes(b"half a checkpoint")
        lock = tmp_path / f".{run.name}.lock"  # ... registered in the dead writer's lock file (its flock died with it)
        lock.write_bytes(b"reidx-lock 12345\n" + registration(tmp_path, stale))
        theirs = [run / ".last.pt.mine.tmp", run / "last.pt.k3j_x9a2.tmp"] if resume else []
        theirs += [run / f".last.pt.{dead_pid()}-deadbeef.tmp"] if resume else []  # named like one, not registered
        for path in theirs:
            path.write_text("not reidx's")
        options = [] if resume else ["--dataset", datasets / "a", "--epochs", "0", "--val-ids", "0", *CLI_TINY]
        code, _, err = run_cli("--device", "cpu", "train", "--out", run, *resume, *options)
        assert code == 0, err
        assert not stale.exists() and (run / "last.pt").is_file()
        assert all(path.read_text() == "not reidx's" for path in theirs)
        assert not (tmp_path / f".{run.name}.lock").exists()


def test_a_damaged_training_state_is_one_line(run_cli: Cli, datasets: Path, tmp_path: Path) -> None:
    run = untrained_run(datasets / "a", tmp_path / "run")
    checkpoint = open_model_checkpoint(run / "last.pt")
    model_config, state = checkpoint.model_config, checkpoint.state
    del state["train"]["scheduler"]
    torch.save(state, run / "last.pt")
    before = tree(run)
    line = fails(run_cli, "train", "--out", run, "--resume", match="holds a damaged training state")
    assert tree(run) == before and model_config["name"] == "cadnet"
    assert "delete" not in line and "another --out" in line  # no advice that loses the run's files
    (run / "last.pt").unlink()  # the user replaces it (reidx replaces only files it wrote) ...
    save_checkpoint(run / "last.pt", build_network(checkpoint), (64, 32))  # ... with weights only, like best.pt
    fails(run_cli, "train", "--out", run, "--resume", match="holds no training state")


@pytest.fixture(scope="module")
def finished(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run keeping epoch_N.pt every epoch, with a best.pt (validated on 2 ids)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    options = {"dataset": str(datasets / "a"), "epochs": 2, "save_every": 1, "val_ids": 0.25, **TINY}
    run_training(run, options, devices=Devices("cpu"), show_progress=False)
    assert {"best.pt", "epoch_1.pt", "epoch_2.pt", "log.csv"} <= {path.name for path in run.iterdir()}
    return run


def test_a_run_without_last_pt_is_not_started_over(run_cli: Cli, finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "last.pt").unlink()
    before = tree(run)
    line = fails(run_cli, "train", "--out", run, "--resume", match=f"{run} has no last.pt to resume, but holds")
    assert "best.pt, config.json" not in line and "best.pt, epoch_1.pt, epoch_2.pt, log.csv" in line
    assert f"copy {run / 'epoch_2.pt'} over {run / 'last.pt'} to resume from epoch 2" in line
    assert tree(run) == before
    (run / "epoch_1.pt").unlink()
    (run / "epoch_2.pt").unlink()
    line = fails(run_cli, "train", "--out", run, "--resume", match="holds best.pt, log.csv")
    assert "another --out" in line and tree(run) == {k: v for k, v in before.items() if not k.startswith("epoch")}


def test_another_runs_last_pt_is_refused(run_cli: Cli, datasets: Path, finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    other = untrained_run(datasets / "a", tmp_path / "other")
    shutil.copyfile(other / "last.pt", run / "last.pt")  # same dataset, same options: only the run differs
    before = tree(run)
    line = fails(run_cli, "train", "--out", run, "--resume", "--epochs", "3", match="is another run's checkpoint")
    theirs, ours = (json.loads((path / "config.json").read_text())["run_id"] for path in (other, run))
    assert theirs[:12] in line and ours[:12] in line and "epoch_2.pt" in line
    assert tree(run) == before
    state = open_checkpoint(other / "last.pt").state
    del state["meta"]["run_id"]  # a checkpoint of an older reidx
    torch.save(state, run / "last.pt")
    fails(run_cli, "train", "--out", run, "--resume", "--epochs", "3", match="run none (an older reidx)")
    alone = tmp_path / "alone"  # no config.json, and a best.pt: whose is it?
    alone.mkdir()
    shutil.copyfile(other / "last.pt", alone / "last.pt")
    shutil.copyfile(finished / "best.pt", alone / "best.pt")
    fails(run_cli, "train", "--out", alone, "--resume", "--epochs", "1", match="but no config.json")


def test_resume_with_no_epoch_left_says_so_and_writes_nothing(run_cli: Cli, finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = tree(run)
    line = fails(run_cli, "train", "--out", run, "--resume", "--epochs", "1", match=f"{run} already has 2 epochs")
    assert f"{run / 'epoch_1.pt'} is the model after 1" in line and "--epochs N with N above 2" in line
    code, out, err = run_cli("--device", "cpu", "train", "--out", run, "--resume")
    assert code == 0 and err.strip() == f"{run} already has its 2 epochs: nothing to train (pass --resume " \
        "--epochs N with N above 2 to train it further)", err  # fmt: skip
    assert "trained cadnet (resnet18) for 2 epochs" in out
    assert tree(run) == before


def test_a_second_writer_is_refused_while_the_first_holds_the_run(run_cli: Cli, datasets: Path, tmp_path: Path) -> None:
    run = untrained_run(datasets / "a", tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom reidx.io import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'training run'):\n    print('held', flush=True)\n    time.sleep(120)\n",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(run)
        line = fails(
            run_cli,
            "train",
            "--out",
            run,
            "--resume",
            "--epochs",
            "1",
            match="is being written by another reidx process",
        )
        assert f"pid {holder.pid}" in line and tree(run) == before
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli("--device", "cpu", "train", "--out", run, "--resume", "--epochs", "1")
    assert code == 0, err  # the dead holder's lock is gone with its process


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_is_bit_identical(datasets: Path, tmp_path: Path) -> None:
    options = {"epochs": 3, "save_every": 1, "val_ids": 0.25, **TINY}
    reference = tmp_path / "reference"
    run_training(reference, {"dataset": str(datasets / "a"), **options}, devices=Devices("cpu"), show_progress=False)
    run = tmp_path / "killed"
    flags = ["--epochs", "3", "--save-every", "1", "--val-ids", "0.25", *CLI_TINY]
    command = [sys.executable, "-m", "reidx", "--device", "cpu", "train", "--dataset", str(datasets / "a")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen([*command, "--out", str(run), *flags], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "epoch_1.pt").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "training ended before it could be killed"
    assert not (run / "epoch_3.pt").exists()
    code = subprocess.run([*command[:5], "train", "--out", str(run), "--resume"], env=env, capture_output=True)
    assert code.returncode == 0, code.stderr.decode()[-2000:]
    assert not any(path.name.endswith(".tmp") for path in run.iterdir())
    final, expected = open_checkpoint(run / "last.pt").state, open_checkpoint(reference / "last.pt").state
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, final["model"][name]), name
    timing = ("images_per_s", "seconds")
    logged = [[{k: v for k, v in row.items() if k not in timing} for row in read_log(r)] for r in (run, reference)]
    assert logged[0] == logged[1]
