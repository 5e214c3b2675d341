"""Whole runs: files written, exact resume, DDP under torchrun, the recover job, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reidx.checkpoint import open_checkpoint, save_checkpoint
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.models import build_model
from reidx.train import run_training
from tests.tiny import TINY

CLI_TINY = ["--arch", "resnet18", "--no-pretrained", "--input-size", "64x32", "--discriminator-width", "8"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-run") / "synth"
    prepare_dataset("synthetic", None, out, ids=12, cameras=2, images_per_camera=2, workers=2)
    return out


@pytest.fixture(scope="module")
def two_epochs(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch CAD-Net run keeping epoch_N.pt every epoch."""
    run = tmp_path_factory.mktemp("runs") / "a"
    run_training(
        run,
        {"dataset": str(dataset), "epochs": 2, "save_every": 1, "val_ids": 0.34, **TINY},
        devices=Devices("cpu"),
        show_progress=False,
    )
    return run


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_config_log_and_checkpoints(two_epochs: Path) -> None:
    assert {p.name for p in two_epochs.iterdir()} == {
        "config.json",
        "log.csv",
        "last.pt",
        "best.pt",
        "epoch_1.pt",
        "epoch_2.pt",
    }
    record = json.loads((two_epochs / "config.json").read_text())
    assert record["seed"] == 0 and record["config"]["arch"] == "resnet18"
    assert set(record["versions"]) == {"reidx", "torch", "torchvision", "python"} and record["commands"]
    rows = read_log(two_epochs)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert {"val_rank1", "val_mAP", "val_psnr", "val_psnr_bilinear"} <= set(rows[0])
    assert {
        "id",
        "triplet",
        "rec",
        "adv_feature",
        "adv_image",
        "d_feature",
        "d_image",
        "acc_d_feature",
        "acc_d_image",
        "images_per_s",
    } <= set(rows[2])
    state = open_checkpoint(two_epochs / "last.pt").state
    assert state["train"]["epoch"] == 2 and state["model_config"]["arch"] == "resnet18"


def test_resume_after_epoch_one_matches_an_uninterrupted_run(two_epochs: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "b"
    resumed.mkdir()
    shutil.copyfile(two_epochs / "epoch_1.pt", resumed / "last.pt")
    run_training(resumed, {}, resume=True, devices=Devices("cpu"), show_progress=False)
    run_ids = [json.loads((run / "config.json").read_text())["run_id"] for run in (two_epochs, resumed)]
    assert run_ids[0] == run_ids[1]  # a folder holding only last.pt continues that checkpoint's run
    reference, again = read_log(two_epochs), read_log(resumed)
    assert len(again) == 3
    for name in ("id", "triplet", "rec", "adv_feature", "adv_image", "total", "d_feature", "d_image", "lr"):
        assert float(again[2][name]) == pytest.approx(float(reference[2][name]), abs=1e-5), name
    final_a, final_b = open_checkpoint(two_epochs / "last.pt").state, open_checkpoint(resumed / "last.pt").state
    for key, tensor in final_a["model"].items():
        assert torch.allclose(tensor.float(), final_b["model"][key].float(), atol=1e-5), key


def test_cli_errors_are_one_line(run_cli, dataset: Path, two_epochs: Path, tmp_path: Path) -> None:
    def fails(*args: str, match: str) -> None:
        code, _, err = run_cli(*args)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1 and match in errors[0] and "Traceback" not in err, err

    fails("train", "--dataset", str(tmp_path), "--out", str(tmp_path / "r"), *CLI_TINY, match="manifest.parquet")
    fails("train", "--dataset", str(dataset), "--out", str(two_epochs), match="pass --resume")
    fails("train", "--out", str(tmp_path / "none"), "--resume", match="nothing to resume")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(two_epochs / "last.pt", other / "last.pt")
    fails("train", "--out", str(other), "--resume", "--arch", "resnet34", match="arch=resnet18, not resnet34")
    (other / "last.pt").write_bytes(b"not a checkpoint at all")
    fails("train", "--out", str(other), "--resume", match="cannot read checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    for image in (broken / "hr").iterdir():
        image.write_bytes(b"not a png")
    tiny_batch = ["--val-ids", "0", "--batch-ids", "2", "--batch-instances", "2", "--workers", "1"]
    fails("train", "--dataset", str(broken), "--out", str(tmp_path / "q"), *CLI_TINY, *tiny_batch, match="cannot read")
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["config.json"]  # a fresh run may reuse this --out
    fails(
        "train",
        "--dataset",
        str(dataset),
        "--out",
        str(tmp_path / "p"),
        "--arch",
        "resnet18",
        "--pretrained",
        str(tmp_path / "missing.pth"),
        match="ImageNet weights for resnet18",
    )


def test_recover_writes_images_scores_and_grid(run_cli, dataset: Path, two_epochs: Path, tmp_path: Path) -> None:
    out, grid = tmp_path / "recovered", tmp_path / "grid.png"
    code, stdout, err = run_cli(
        "--device",
        "cpu",
        "recover",
        str(dataset / "lr"),
        "--checkpoint",
        str(two_epochs / "last.pt"),
        "--out",
        str(out),
        "--hr",
        str(dataset / "hr"),
        "--grid",
        str(grid),
        "--json",
        "--workers",
        "0",
    )
    assert code == 0, err
    report = json.loads(stdout)
    inputs = sorted(p.stem for p in (dataset / "lr").rglob("*.png"))
    assert sorted(p.stem for p in out.glob("*.png")) == inputs
    from PIL import Image

    assert Image.open(out / f"{inputs[0]}.png").size == (32, 64)
    assert Image.open(grid).size == (3 * 32, min(len(inputs), 32) * 64)
    assert {"psnr", "ssim", "bilinear_psnr", "bilinear_ssim"} <= set(report["mean"])
    assert all(image["scores"]["psnr"] > 0 for image in report["images"])
    assert report["lpips"] == "ok" or "AlexNet" in report["lpips"]


def test_recover_refuses_a_baseline_checkpoint(run_cli, tmp_path: Path) -> None:
    checkpoint = tmp_path / "baseline.pt"
    save_checkpoint(checkpoint, build_model("baseline", num_classes=2, arch="resnet18"), (64, 32))
    (tmp_path / "x.png").write_bytes(b"")
    code, _, err = run_cli("recover", str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path))
    assert code == 1 and "cannot recover" in err and len(err.strip().splitlines()) == 1


DDP_SCRIPT = """
import sys, torch
from reidx.train import TrainConfig, Trainer
from reidx.device import Devices
from reidx.distributed import setup, teardown
env = setup(Devices("cpu"))
config = TrainConfig(dataset=sys.argv[1], epochs=1, val_ids=0, arch="resnet18", pretrained=False,
                     input_size=(64, 32), discriminator_width=8, batch_ids=2, batch_instances=2, workers=0)
trainer = Trainer(config, sys.argv[2], env)
trainer.fit()
torch.save({k: v.detach() for k, v in trainer.model.named_parameters()}, f"{sys.argv[2]}/rank{env.rank}.pt")
teardown(env)
"""


def test_torchrun_two_ranks_on_gloo_stay_in_sync(dataset: Path, tmp_path: Path) -> None:
    script, run = tmp_path / "ddp.py", tmp_path / "run"
    script.write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(dataset), str(run)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(run / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    saved = open_checkpoint(run / "last.pt").state["model"]
    for name, tensor in ranks[0].items():
        assert torch.equal(tensor, ranks[1][name]), name
        assert torch.equal(tensor, saved[name]), name
    assert open_checkpoint(run / "last.pt").state["train"]["global_step"] >= 1
