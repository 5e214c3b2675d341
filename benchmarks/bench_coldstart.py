"""Cold start of one query: ``reidx search CROP --gallery IDX --json`` as a fresh process, with the index's
ONNX export (``--model-file``: onnxruntime, no torch imported) vs its checkpoint (torch), on the demo index.

Each path runs ``--runs`` times, alternating, after one untimed run each (the files in the page cache, the
modules' bytecode cached as after any install, even where ``PYTHONDONTWRITEBYTECODE`` is set); the figure is
the child's CPU time (user + sys, its own descendants included), with the wall time beside it.
Both paths must rank the same hits. Goal: the ONNX path under 1.0 CPU-second (issue 22), and the ratio
checkpoint / ONNX. The export is written once into a temporary folder. Without ``--index`` the demo's
``demo/index`` is used (built by ``make demo``), else a ``scripts/demo.py --quick`` demo in a temporary folder.
Usage: ``python -m benchmarks.bench_coldstart [--index demo/index] [--runs 5] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_serve import demo_index, environment, query_crops
from reidx.device import Devices
from reidx.export.onnx import export_onnx
from reidx.gallery import open_gallery_dir

#: The ONNX path's CPU-second budget (issue 22).
GOAL_CPU_S = 1.0


def cold_run(command: list[str]) -> tuple[float, float, list[list[int]]]:
    """``(cpu_s, wall_s, ranked ids)`` of one fresh ``reidx search --json`` process."""
    env = {name: value for name, value in environment().items() if name != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, [[hit["index_id"] for hit in result["results"]] for result in json.loads(done.stdout)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, default=None, help="demo index (default: demo/index)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per path (default 5; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as scratch:
        index = args.index or demo_index(Path(scratch))
        checkpoint = Path(open_gallery_dir(index, Devices("cpu")).header.checkpoint)
        model_file = Path(scratch) / "model.onnx"
        export_onnx(checkpoint, model_file)
        crop = query_crops(index, 1)[0]
        search = [sys.executable, "-m", "reidx", "search", str(crop), "--gallery", str(index), "--json"]
        commands = {
            "onnx": [*search, "--model-file", str(model_file)],
            "checkpoint": [*search, "--checkpoint", str(checkpoint)],
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        ranked = {name: cold_run(command)[2] for name, command in commands.items()}  # untimed: the page cache
        if ranked["onnx"] != ranked["checkpoint"]:
            raise RuntimeError(f"the ONNX and checkpoint paths rank differently: {ranked}")
        for _ in range(runs):
            for name, command in commands.items():
                cpu, wall, _ = cold_run(command)
                figures[name].append((cpu, wall))
    print(f"cold `reidx search CROP --gallery {index} --json`, {runs} runs each (CPU s = user + sys of the child)")
    print("| path | CPU s per run | median CPU s | median wall s |\n|---|---|---|---|")
    medians = {}
    for name, values in figures.items():
        cpu, wall = (float(np.median([v[i] for v in values])) for i in (0, 1))
        medians[name] = cpu, wall
        print(f"| {name} | {', '.join(f'{v[0]:.2f}' for v in values)} | {cpu:.2f} | {wall:.2f} |")
    ratio = medians["checkpoint"][0] / medians["onnx"][0]
    verdict = "met" if medians["onnx"][0] < GOAL_CPU_S else "NOT met"
    print(f"checkpoint / onnx CPU: {ratio:.1f}x; goal onnx < {GOAL_CPU_S} CPU s: {verdict}", flush=True)
    return {
        "onnx_cpu_s": medians["onnx"][0],
        "onnx_wall_s": medians["onnx"][1],
        "checkpoint_cpu_s": medians["checkpoint"][0],
        "checkpoint_wall_s": medians["checkpoint"][1],
        "checkpoint_over_onnx_cpu": ratio,
    }


if __name__ == "__main__":
    main()
