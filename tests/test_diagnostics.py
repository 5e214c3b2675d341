"""`benchmarks/diagnose_runs.py` on a tiny synthetic run: every figure is measured and in range."""

from __future__ import annotations

from pathlib import Path

from benchmarks import diagnose_runs
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.train import run_training


def test_diagnose_runs_measures_gap_memorisation_and_invariance(tmp_path: Path, capsys) -> None:
    dataset = tmp_path / "synth"
    prepare_dataset("synthetic", None, dataset, ids=10, cameras=2, images_per_camera=2, workers=2)
    run = tmp_path / "run"
    options = {"dataset": str(dataset), "epochs": 1, "val_ids": 0.4, "arch": "resnet18", "pretrained": False}
    options.update(input_size="64x32", discriminator_width=8, batch_ids=2, batch_instances=2, workers=0)
    run_training(run, options, devices=Devices("cpu"), show_progress=False)

    result = diagnose_runs.main([str(run), "--sizes", "64x32,128x64"])

    gaps = result["resolution_gap"]
    assert set(gaps) == {"64x32", "128x64"}
    for per_rate in gaps.values():
        assert len(per_rate) == 3 and per_rate[0] > per_rate[-1] > 10  # r=2 is closer to HR than r=4
    (figures,) = result["runs"]
    assert set(figures["held_out_rank1"]) == set(figures["trained_rank1"]) == {"fused", "f", "g"}
    assert all(0 <= value <= 100 for value in [*figures["held_out_rank1"].values(), figures["probe_accuracy"]])
    (accuracy,) = figures["training_d_accuracy"]  # one epoch, CAD-Net
    assert 0 <= accuracy <= 100
    assert "| 64x32 |" in capsys.readouterr().out
