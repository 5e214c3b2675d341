"""A short CPU run really learns: validation Rank-1 rises well above the untrained model's, and `recover`'s
output is closer to the HR originals than the bilinear-upsampled LR input (PSNR).

The slowest test of the suite, sized for a CPU test: ResNet-18 from scratch at 64x32 (the smallest input the
decoder allows), Adam lr 2e-3 (SGD 1e-3 learns too slowly from scratch) and lambda_rec 10, 336 steps.
From scratch, G first learns to reproduce its (blurry) input and only then to sharpen it, so the test uses
a rate where bilinear up-sampling loses much: x16 (20.9 dB at 64x32). At x2-x4 the 80-128-pixel originals
come back almost losslessly at 64x32 (33 dB), which only a long run could beat.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidx.data.prepare import prepare_dataset


@pytest.mark.slow
def test_short_run_learns_to_identify_and_to_recover(run_cli, tmp_path: Path) -> None:
    dataset, run = tmp_path / "synth", tmp_path / "run"
    prepare_dataset("synthetic", None, dataset, rates=(16,), ids=60, cameras=2, images_per_camera=4, workers=2)
    code, stdout, err = run_cli(
        "--device", "cpu", "train", "--dataset", str(dataset), "--out", str(run), "--arch", "resnet18",
        "--no-pretrained", "--input-size", "64x32", "--discriminator-width", "8", "--batch-ids", "4",
        "--batch-instances", "2", "--epochs", "16", "--val-ids", "0.3", "--optimizer", "adam",
        "--lr", "0.002", "--lambda-rec", "10", "--workers", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    untrained, final = summary["untrained"], summary["final"]
    assert final["val_rank1"] >= untrained["val_rank1"] + 0.4, (untrained, final)
    assert final["val_mAP"] > untrained["val_mAP"]
    assert final["val_psnr"] >= untrained["val_psnr"] + 5.0, (untrained, final)

    code, stdout, err = run_cli(
        "--device", "cpu", "recover", str(dataset / "lr"), "--checkpoint", str(run / "last.pt"),
        "--out", str(tmp_path / "recovered"), "--hr", str(dataset / "hr"), "--json", "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    mean = json.loads(stdout)["mean"]
    assert mean["psnr"] > mean["bilinear_psnr"] + 0.05, mean
