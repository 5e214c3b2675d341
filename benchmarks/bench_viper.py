"""MLR-VIPeR on real images: the baseline, CAD-Net and two ablations, same arch, input, epochs and seed.

Reads `../shared/data/VIPeR` (or `--root`; research use only, never copied), prepares MLR-VIPeR (316/316
ids, cam_a LR queries at rates {2,3,4}, cam_b HR gallery, 10 seeded splits), trains every variant on the
first `--splits` splits, then runs `reidx report` over all runs (each run evaluated on its own split) and
prints, per variant, LR-query and HR-query Rank-1 averaged over the splits, and G's recovery quality.

Input size: VIPeR's native 128×48 by default. Smaller inputs erase the resolution gap CAD-Net exists to close:
at 64×32 the HR image is itself VIPeR down-sampled ×2, and an LR query at r = 2 up-sampled back to 64×32 is
33.8 dB from it (26.2 / 23.3 dB at r = 3 / 4), against 23.4 / 21.0 / 19.5 dB at 128×48
(`python -m benchmarks.diagnose_runs RUN` measures this and more on training ids).

CPU budget: the defaults (2 splits, resnet18, 128×48, scratch) aim at under an hour on 2 cores. On a GPU use
`--splits 10 --arch resnet50 --input-size 256x128 --epochs 60 --pretrained PATH`; a run that stops resumes
(finished runs are skipped, started ones continue from their last.pt).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from reidx.report.tables import METHOD_BILINEAR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIPER = ROOT.parent / "shared" / "data" / "VIPeR"

#: variant -> extra `reidx train` flags (paper Table 3's ablations that this benchmark covers)
VARIANTS: dict[str, str] = {
    "baseline": "--model baseline",
    "cadnet": "--model cadnet",
    "cadnet-no-adv-feature": "--model cadnet --no-adv-feature",
    "cadnet-no-rec": "--model cadnet --no-rec",
}


def reidx(args: str) -> subprocess.CompletedProcess:
    """Run one `reidx` command, echoing it; a failure stops the benchmark."""
    print(f"$ reidx {args}", flush=True)
    return subprocess.run([str(Path(sys.executable).with_name("reidx")), *shlex.split(args)], check=True)


def train_all(data: Path, runs: Path, splits: int, train_flags: str) -> dict[str, list[Path]]:
    """Train (or resume, or skip when finished) every variant on every split; checkpoints per variant."""
    checkpoints: dict[str, list[Path]] = defaultdict(list)
    for split in range(splits):
        for variant, flags in VARIANTS.items():
            run = runs / f"split{split}" / variant
            done = run / "done"
            if not done.is_file():
                resume = "--resume" if (run / "last.pt").is_file() else ""
                reidx(f"train --dataset {data} --trial {split} --out {run} {flags} {train_flags} {resume}")
                done.touch()
            checkpoints[variant].append(run / "last.pt")
    return checkpoints


def summarise(report_json: Path, checkpoints: dict[str, list[Path]]) -> dict[str, dict[str, float]]:
    """Per variant: LR / HR-query Rank-1 and mAP and G's SSIM / PSNR, averaged over its splits."""
    document = json.loads(report_json.read_text())
    variant_of = {str(path.resolve()): variant for variant, paths in checkpoints.items() for path in paths}
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for entry in document["ranking"]:
        variant = variant_of.get(str(Path(entry["checkpoint"]).resolve()))
        if variant and entry["set"] in ("mixed", "hr"):
            prefix = "LR" if entry["set"] == "mixed" else "HR"
            values[variant][f"{prefix} R1"].append(entry["rank1"])
            values[variant][f"{prefix} mAP"].append(entry["mAP"])
    for record in document["recovery"]:
        variant = variant_of.get(str(Path(record["checkpoint"]).resolve()))
        if variant and record["set"] == "mixed":
            key = "bilinear" if record["label"] == METHOD_BILINEAR else variant
            values[key]["SSIM"].append(record["ssim"])
            values[key]["PSNR"].append(record["psnr"])
    return {v: {k: sum(xs) / len(xs) for k, xs in metrics.items()} for v, metrics in values.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_VIPER, help="VIPeR folder (cam_a/, cam_b/)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "viper", help="work folder")
    parser.add_argument("--splits", type=int, default=2, help="splits to train and evaluate (of 10)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", default="128x48", help="HxW (default: VIPeR's native size)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", type=Path, help="ImageNet weights (.pth); default: from scratch")
    parser.add_argument(
        "--recipe",
        default="--optimizer adam --lr 0.002 --lambda-rec 10 --residual-recovery",
        help="extra train flags (default: the demo's CPU-from-scratch recipe plus residual recovery, the best "
        "CAD-Net setting on held-out training ids; '' = paper-lineage defaults)",
    )
    parser.add_argument("--quick", action="store_true", help="1 split, 1 epoch (a smoke test of the pipeline)")
    args = parser.parse_args(argv)
    if not (args.root / "cam_a").is_dir():
        print(f"skipped: no VIPeR at {args.root} (cam_a/, cam_b/); pass --root", file=sys.stderr)
        return {}
    splits, epochs = (1, 1) if args.quick else (args.splits, args.epochs)
    recipe = "-".join(args.recipe.replace("--", "").split()) or "paper-defaults"
    data = args.out / "data"
    runs = args.out / f"{args.arch}-{args.input_size}-e{epochs}-s{args.seed}-{recipe}"
    if not (data / "manifest.parquet").is_file():
        reidx(f"prepare --dataset viper --root {args.root} --downsample 2,3,4 --trials 10 --seed 0 --out {data}")
    init = f"--pretrained {args.pretrained}" if args.pretrained else "--no-pretrained"
    train_flags = (
        f"--arch {args.arch} --input-size {args.input_size} --epochs {epochs} --seed {args.seed} {init} {args.recipe}"
    )
    checkpoints = train_all(data, runs, splits, train_flags)
    every = " ".join(f"--checkpoint {path}" for paths in checkpoints.values() for path in paths)
    report = runs / "report.md"
    reidx(f"report {every} --dataset {data} --modes fused --published --out {report}")
    reidx(f"report {every} --dataset {data} --modes fused --format json --out {runs / 'report.json'}")
    summary = summarise(runs / "report.json", checkpoints)
    print(f"\nMLR-VIPeR, single-shot, queries LR {{2,3,4}} mixed, {splits} split(s), {train_flags}")
    print("| variant | LR R1 | LR mAP (=MRR) | HR R1 | SSIM | PSNR |\n|---|---|---|---|---|---|")
    for variant, figures in summary.items():
        cells = [figures.get(key) for key in ("LR R1", "LR mAP", "HR R1")]
        text = [f"{100 * x:.1f}" if x is not None else "–" for x in cells]
        ssim, psnr = figures.get("SSIM"), figures.get("PSNR")
        text += [f"{ssim:.3f}" if ssim is not None else "–", f"{psnr:.2f}" if psnr is not None else "–"]
        print(f"| {variant} | " + " | ".join(text) + " |")
    print(f"\nfull report: {report}")
    return summary


if __name__ == "__main__":
    main()
