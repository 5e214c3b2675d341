"""Training throughput of CAD-Net against the baseline at the same batch and input size.

Both trainers are built on a small generated synthetic dataset; each timed step is one full
``Trainer.train_step`` (CAD-Net: generator step on E, G, F, C with every loss, then the D_F / D_I step;
baseline: CE + triplet) on one pre-loaded HR batch and LR batch, so data decoding is left out. Steps of the
two models alternate and the median step time is kept, so load from other processes hits both alike.
Images/s counts the HR and the LR batch. The FLOPs of one step (forward and backward, counted by
``torch.utils.flop_counter``) give a load-independent cost ratio beside the timed one.
Goal: CAD-Net costs at most 3.5x the baseline.

Usage: ``python benchmarks/bench_train.py [--quick] [--arch resnet18] [--input-size 128x64] [--steps 6]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.distributed import DistEnv
from reidx.train import TrainConfig, Trainer
from reidx.train.config import parse_size

GOAL = 3.5


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64x32 inputs, 2x2 batches, 3 steps")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", default="128x64")
    parser.add_argument("--batch-ids", type=int, default=4)
    parser.add_argument("--batch-instances", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (after one warm-up)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.quick:
        args.input_size, args.batch_ids, args.batch_instances, args.steps = "64x32", 2, 2, 3
    env = DistEnv(place=Devices(args.device).torch)
    options = dict(
        arch=args.arch,
        pretrained=False,
        input_size=parse_size(args.input_size),
        batch_ids=args.batch_ids,
        batch_instances=args.batch_instances,
        workers=0,
        val_ids=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "synth"
        prepare_dataset("synthetic", None, dataset, ids=4 * args.batch_ids, cameras=2, images_per_camera=4)
        trainers = {
            name: Trainer(TrainConfig(dataset=str(dataset), model=name, **options), Path(tmp) / name, env)
            for name in ("cadnet", "baseline")
        }
        batches = {name: next(iter(trainer.loaders(1))) for name, trainer in trainers.items()}
        flops = {name: step_flops(trainer, batches[name]) for name, trainer in trainers.items()}
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for step in range(args.steps + 1):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_step(*batches[name])
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                if step:  # the first step is a warm-up
                    times[name].append(time.perf_counter() - start)
    images = 2 * args.batch_ids * args.batch_instances
    speed = {name: images / statistics.median(values) for name, values in times.items()}
    figures: dict[str, float | str] = {
        "setting": f"{args.arch} {args.input_size} {args.batch_ids}x{args.batch_instances} on {env.device}",
        "cadnet_images_per_s": speed["cadnet"],
        "baseline_images_per_s": speed["baseline"],
        "cost_ratio": speed["baseline"] / speed["cadnet"],
        "cadnet_gflops_per_step": flops["cadnet"] / 1e9,
        "baseline_gflops_per_step": flops["baseline"] / 1e9,
        "flop_ratio": flops["cadnet"] / flops["baseline"],
    }
    print(
        f"{figures['setting']}: CAD-Net {speed['cadnet']:.1f} img/s, baseline {speed['baseline']:.1f} img/s, "
        f"CAD-Net costs {figures['cost_ratio']:.2f}x the baseline in time, {figures['flop_ratio']:.2f}x in FLOPs "
        f"(goal <= {GOAL}x)"
    )
    return figures


def step_flops(trainer: Trainer, batch) -> int:
    """FLOPs of one training step (forward and backward of both phases)."""
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(*batch)
    return counter.get_total_flops()


if __name__ == "__main__":
    main()
