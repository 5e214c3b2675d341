"""Embedding throughput of a ``reidx export`` ONNX file in onnxruntime against the checkpoint in torch eager.

For CAD-Net (fused: E, G and F per image) and the baseline, both at the demo's size by default (resnet18,
64×32 inputs; ``--input-size 256x128`` for the paper's), untrained (weights do not change the cost): each model
is saved, exported with ``reidx export``'s code, and run on the same pre-made batches of 1 and 32 images
(decoding left out) by torch (``TorchEmbedder``, torch's default threads) and onnxruntime. onnxruntime runs
as ``--model-file`` runs it (``OnnxEmbedder``: as many intra-op threads as torch, threads that sleep between
runs; the headline ratio) and, to show where time goes, with spinning threads (onnxruntime's default), with
its own default thread count and with only basic graph optimisation. Runners alternate and the median call
time is kept, so load from other processes hits all alike. Images/s per runner and the ratio
onnxruntime / torch (> 1: onnxruntime faster).

Usage: ``python -m benchmarks.bench_export [--quick] [--arch resnet18] [--input-size 64x32] [--reps 20]``.
"""

from __future__ import annotations

import os

# as the CLI does: torch's OpenMP threads wait passively, so they do not spin against onnxruntime's
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse  # noqa: E402
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from reidx.checkpoint import save_checkpoint
from reidx.device import Devices
from reidx.evaluation.embedders import TorchEmbedder
from reidx.export.onnx import export_onnx
from reidx.export.runtime import OnnxEmbedder, open_onnx, read_export
from reidx.models import build_model
from reidx.models.loading import load_model
from reidx.train.config import parse_size

BATCHES = (1, 32)
ALL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", default="64x32")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per runner at batch 1 (batch 32: a quarter)")
    args = parser.parse_args(argv)
    reps = 5 if args.quick else args.reps
    size = parse_size(args.input_size)
    threads = torch.get_num_threads()
    figures: dict[str, float | str] = {"setting": f"{args.arch} {args.input_size} cpu, torch {threads} threads"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cadnet", "baseline"):
            torch.manual_seed(0)
            checkpoint, model_file = Path(tmp) / f"{name}.pt", Path(tmp) / f"{name}.onnx"
            save_checkpoint(checkpoint, build_model(name, num_classes=8, arch=args.arch), size)
            export_onnx(checkpoint, model_file)
            runners = {
                "torch": TorchEmbedder.of(load_model(checkpoint)).embed_batch,
                "ort": open_onnx(model_file, "fused", Devices("cpu")).embed_batch,  # as reidx runs it
                "ort_spinning": onnx_runner(model_file, threads, ALL, spinning=True),
                "ort_default_threads": onnx_runner(model_file, 0, ALL),
                "ort_basic_opt": onnx_runner(model_file, threads, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
            }
            for batch in BATCHES:
                images = torch.rand(batch, 3, *size) * 2 - 1
                speed = images_per_s(runners, images, max(3, reps if batch == 1 else reps // 4))
                for runner, value in speed.items():
                    figures[f"{name}_b{batch}_{runner}_images_per_s"] = value
                figures[f"{name}_b{batch}_ort_over_torch"] = speed["ort"] / speed["torch"]
                print(
                    f"{figures['setting']}: {name} batch {batch}: torch {speed['torch']:.1f} img/s, onnxruntime "
                    f"{speed['ort']:.1f} img/s ({speed['ort'] / speed['torch']:.2f}x; spinning "
                    f"{speed['ort_spinning']:.1f}, default threads {speed['ort_default_threads']:.1f}, "
                    f"basic optimisation {speed['ort_basic_opt']:.1f})",
                    flush=True,
                )
    return figures


def onnx_runner(
    model_file: Path, threads: int, level: ort.GraphOptimizationLevel, spinning: bool = False
) -> Callable[[torch.Tensor], object]:
    """``embed_batch`` of the export in a CPU session with ``threads`` intra-op threads (0: onnxruntime's
    default), graph optimisation ``level`` and (``spinning``) onnxruntime's default of threads that spin after
    each run, which takes the cores from whatever runs next (here: torch)."""
    _, info = read_export(model_file)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = level
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    return OnnxEmbedder(session, info, model_file).embed_batch


def images_per_s(runners: dict[str, Callable[[torch.Tensor], object]], images: torch.Tensor, reps: int) -> dict:
    """Median images/s of each runner over ``reps`` calls (after one warm-up), the runners alternating."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs = {name: runner(images) for name, runner in runners.items()}  # warm-up
    reference = outputs["torch"]
    for name, output in outputs.items():
        assert np.min(np.sum(np.asarray(output) * reference, axis=1)) >= 0.9999, name
    for _ in range(reps):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(images)
            times[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
