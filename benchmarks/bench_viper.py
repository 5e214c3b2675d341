"""MLR-VIPeR on real images: the baseline, CAD-Net and three ablations, same arch, input, epochs and seed.

Reads `../shared/data/VIPeR` (or `--root`; research use only, never copied), prepares MLR-VIPeR (316/316
ids, cam_a LR queries at rates {2,3,4} plus an unseen ×8 set, cam_b HR gallery, 10 seeded splits), trains
every variant of `--variants` on the first `--splits` splits, split by split, then runs `reidx report` over
the finished runs (each evaluated on its own split). It prints, per variant, LR-query Rank-1 / Rank-5 / mAP,
HR-query and ×8 Rank-1 as mean ± 95% CI over splits (Student t on the per-split values), G's recovery against
bilinear, and the **paired** per-split differences against the baseline (and the ablations against CAD-Net).

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
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.studies import DONE, cell, diff_cell, reidx, train_run
from reidx.metrics.stats import paired_ci
from reidx.report.evaluation import METHOD_BILINEAR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIPER = ROOT.parent / "shared" / "data" / "VIPeR"

#: variant -> extra `reidx train` flags (paper Table 3's ablations that this benchmark covers)
VARIANTS: dict[str, str] = {
    "baseline": "--model baseline",
    "cadnet": "--model cadnet",
    "cadnet-no-adv-feature": "--model cadnet --no-adv-feature",
    "cadnet-no-rec": "--model cadnet --no-rec",
    "cadnet-no-adv-image": "--model cadnet --no-adv-image",
}

#: report query set -> column: LR {2,3,4} mixed, HR queries, and every query at the unseen rate 8
SETS = {"mixed": "LR", "hr": "HR", "r8": "x8"}


def run_dir(runs: Path, split: int, variant: str) -> Path:
    """Where one variant's run on one split lives."""
    return runs / f"split{split}" / variant


def train_all(data: Path, runs: Path, splits: int, variants: list[str], train_flags: str) -> None:
    """Train (or resume, or skip when finished) every variant on every split, split by split."""
    for split in range(splits):
        for variant in variants:
            train_run(
                run_dir(runs, split, variant), f"--dataset {data} --trial {split} {VARIANTS[variant]} {train_flags}"
            )


def finished(runs: Path, splits: int, variants: list[str]) -> dict[str, dict[int, Path]]:
    """variant -> split -> last.pt of every finished run."""
    found: dict[str, dict[int, Path]] = defaultdict(dict)
    for variant in variants:
        for split in range(splits):
            run = run_dir(runs, split, variant)
            if (run / DONE).is_file():
                found[variant][split] = run / "last.pt"
    return found


Values = dict[str, dict[str, dict[int, float]]]  # variant -> metric -> split -> value


def per_split(report_json: Path, checkpoints: dict[str, dict[int, Path]]) -> tuple[Values, dict[str, str]]:
    """Per variant, metric and split: Rank-1/5 and mAP per query set, G's SSIM / PSNR; and each variant's init."""
    document = json.loads(report_json.read_text())
    owner = {str(path.resolve()): (v, s) for v, paths in checkpoints.items() for s, path in paths.items()}
    values: Values = defaultdict(lambda: defaultdict(dict))
    init: dict[str, str] = {}
    for entry in document["ranking"]:
        for record in entry["per_trial"].values():  # one per split: each run is evaluated on its own
            variant, split = owner.get(str(Path(record["checkpoint"]).resolve()), (None, None))
            if variant and entry["set"] in SETS:
                init[variant] = entry["init"]
                for metric, label in (("rank1", "R1"), ("rank5", "R5"), ("mAP", "mAP")):
                    values[variant][f"{SETS[entry['set']]} {label}"][split] = 100 * record[metric]
    for record in document["recovery"]:
        variant, split = owner.get(str(Path(record["checkpoint"]).resolve()), (None, None))
        if variant and record["set"] == "mixed":
            key = "bilinear" if record["label"] == METHOD_BILINEAR else variant
            values[key]["SSIM"][split] = record["ssim"]
            values[key]["PSNR"][split] = record["psnr"]
    return values, init


def tables(values: Values, init: dict[str, str]) -> str:
    """The markdown tables: every variant's means ± 95% CI, then the paired differences per split."""
    lines = [
        "| variant | init | splits | LR R1 | LR R5 | LR mAP | HR R1 | ×8 R1 | G PSNR dB (SSIM) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in [v for v in (*VARIANTS, "bilinear") if v in values]:
        metrics = values[variant]
        lr = metrics.get("LR R1", {})
        recovery = f"{cell(metrics.get('PSNR'), 2)} ({cell(metrics.get('SSIM'), 3)})" if "PSNR" in metrics else "–"
        if variant == "bilinear":
            lines.append(f"| bilinear up-sampling (reference) | | | | | | | | {recovery} |")
            continue
        ranks = [cell(metrics.get(key)) for key in ("LR R1", "LR R5", "LR mAP", "HR R1", "x8 R1")]
        lines.append(f"| {variant} | {init.get(variant, '?')} | {len(lr)} | " + " | ".join(ranks) + f" | {recovery} |")
    lines += [
        "",
        "| paired difference | splits | Δ LR R1 | Δ LR R5 | Δ LR mAP | Δ HR R1 | Δ ×8 R1 | Δ LR R1 per split |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs = [(v, "baseline") for v in VARIANTS if v != "baseline"]
    pairs += [(v, "cadnet") for v in VARIANTS if v.startswith("cadnet-")]
    for a, b in pairs:
        if a in values and b in values:
            first, second = values[a], values[b]
            splits, _, _ = paired_ci(first.get("LR R1", {}), second.get("LR R1", {}))
            keys = ("LR R1", "LR R5", "LR mAP", "HR R1", "x8 R1")
            deltas = [diff_cell(first.get(k), second.get(k)) for k in keys]
            each = " ".join(f"{first['LR R1'][s] - second['LR R1'][s]:+.1f}" for s in splits)
            lines.append(f"| {a} − {b} | {len(splits)} | " + " | ".join(deltas) + f" | {each} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> tuple[Values, dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_VIPER, help="VIPeR folder (cam_a/, cam_b/)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "viper", help="work folder (keep it out of git)")
    parser.add_argument("--splits", type=int, default=2, help="splits to train and evaluate (of 10)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
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
    parser.add_argument("--report-only", action="store_true", help="train nothing; summarise the finished runs")
    parser.add_argument("--quick", action="store_true", help="1 split, 1 epoch (a smoke test of the pipeline)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; use some of {', '.join(VARIANTS)}")
    if not (args.root / "cam_a").is_dir():
        print(f"skipped: no VIPeR at {args.root} (cam_a/, cam_b/); pass --root", file=sys.stderr)
        return {}, {}
    splits, epochs = (1, 1) if args.quick else (args.splits, args.epochs)
    recipe = "-".join(args.recipe.replace("--", "").split()) or "paper-defaults"
    init_name = "imagenet" if args.pretrained else "scratch"
    data = args.out / "data"
    runs = args.out / f"{args.arch}-{init_name}-{args.input_size}-e{epochs}-s{args.seed}-{recipe}"
    if not (data / "manifest.parquet").is_file():
        rates = "--downsample 2,3,4 --unseen 8"
        reidx(f"prepare --dataset viper --root {args.root} {rates} --trials 10 --seed 0 --out {data}")
    init = f"--pretrained {args.pretrained}" if args.pretrained else "--no-pretrained"
    train_flags = (
        f"--arch {args.arch} --input-size {args.input_size} --epochs {epochs} --seed {args.seed} {init} {args.recipe}"
    )
    if not args.report_only:
        train_all(data, runs, splits, variants, train_flags)
    checkpoints = finished(runs, splits, variants)
    if not checkpoints:
        print(f"no finished runs under {runs}", file=sys.stderr)
        return {}, {}
    every = " ".join(f"--checkpoint {path}" for paths in checkpoints.values() for path in paths.values())
    report = runs / "report.md"
    reidx(f"report {every} --dataset {data} --modes fused --published --out {report}")
    reidx(f"report {every} --dataset {data} --modes fused --format json --out {runs / 'report.json'}")
    values, init_of = per_split(runs / "report.json", checkpoints)
    text = tables(values, init_of)
    print(f"\nMLR-VIPeR, single-shot, LR queries {{2,3,4}} mixed (cam_a) vs HR gallery (cam_b); {train_flags}")
    print("Rank-k and mAP (= MRR) in %, mean ± 95% CI over splits (Student t); each run on its own split\n")
    print(text)
    (runs / "summary.md").write_text(text + "\n")
    print(f"\nfull report: {report}; these tables: {runs / 'summary.md'}")
    return values, init_of


if __name__ == "__main__":
    main()
