"""The whole reidx pipeline on the embedded synthetic dataset: prepare → train → embed → search → report.

Run by `make demo` (CPU-sized, a few minutes) or `python scripts/demo.py --quick` (the test suite's
end-to-end check). Every step is a real `reidx` command, printed before it runs.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: dataset size, input size and training length."""

    ids: int
    cameras: int
    images_per_camera: int
    input_size: str
    epochs: int
    batch_ids: int
    batch_instances: int


FULL = DemoSize(ids=60, cameras=4, images_per_camera=4, input_size="64x32", epochs=10, batch_ids=8, batch_instances=4)
#: Training from scratch on a CPU in minutes: Adam and a stronger L_rec learn much faster than the
#: paper-lineage defaults (SGD 1e-3, λ_rec 1), which assume ImageNet weights and hours on a GPU.
CPU_RECIPE = "--optimizer adam --lr 0.002 --lambda-rec 10"
QUICK = DemoSize(ids=16, cameras=2, images_per_camera=2, input_size="64x32", epochs=1, batch_ids=4, batch_instances=2)


def reidx(*args: str) -> None:
    """Run one `reidx` command (the installed console script beside this Python), echoing it first."""
    command = [str(Path(sys.executable).with_name("reidx")), *args]
    print(f"\n$ reidx {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


def run(out: Path, size: DemoSize) -> Path:
    """Run every step into a fresh ``out`` (the demo owns it); return the report path."""
    shutil.rmtree(out, ignore_errors=True)
    data, runs, index, report = out / "data", out / "runs", out / "index", out / "report.md"
    reidx(
        *f"prepare --dataset synthetic --out {data} --ids {size.ids} --cameras {size.cameras} "
        f"--images-per-camera {size.images_per_camera} --downsample 2,3,4 --unseen 8 --seed 0".split()
    )
    common = (
        f"--dataset {data} --arch resnet18 --no-pretrained --input-size {size.input_size} "
        f"--batch-ids {size.batch_ids} --batch-instances {size.batch_instances} --seed 0 {CPU_RECIPE}"
    )
    reidx(*f"train {common} --model cadnet --epochs 0 --out {runs / 'untrained'}".split())
    reidx(*f"train {common} --model baseline --epochs {size.epochs} --out {runs / 'baseline'}".split())
    reidx(*f"train {common} --model cadnet --epochs {size.epochs} --out {runs / 'cadnet'}".split())
    cadnet = runs / "cadnet" / "last.pt"
    reidx(*f"embed --checkpoint {cadnet} --dataset {data} --split gallery --out {index}".split())
    query = sorted((data / "lr").rglob("*.png"))[0]
    reidx(*f"search {query} --gallery {index} --top-k 5 --montage {out / 'search.png'}".split())
    checkpoints = " ".join(f"--checkpoint {runs / name / 'last.pt'}" for name in ("untrained", "baseline", "cadnet"))
    reidx(*f"report {checkpoints} --dataset {data} --modes fused,f,g --published --out {report}".split())
    return report


def headline(report: Path) -> str:
    """The report's first table (the cross-resolution re-ID results)."""
    lines = report.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo/)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the end-to-end test (< 2 minutes)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(args.out, QUICK if args.quick else FULL)
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Report: {report}\n")
    print(headline(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
