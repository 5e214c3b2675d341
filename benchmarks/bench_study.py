"""The MLR-VIPeR study: baseline against CAD-Net, trained on VIPeR's training split alone and with 3DPeS, SARC3D
and TownCentre added, over several splits; plus a cross-dataset row (trained on the three new sets only).

Reads `../shared/data/{VIPeR,3DPeS,SARC3D,TownCentre}` (or `--data-root`; research use only, never copied) and
works in stages, each resumable (run the same command again to continue; everything goes under `--out`, which
must lie outside the repository):

1. prepare, under OUT/data/: MLR-VIPeR (10 seeded 316/316 splits, cam_a LR queries at {2,3,4}, an unseen ×8
   set) and the three training-only sets (TownCentre and 3DPeS at `--frames-per-id`);
2. train, under OUT/runs/TAG/ (TAG names profile, arch, input, epochs, seed and recipe): per split, each model on
   each arm, `viper` (VIPeR's training split of that split) and `viper+3` (the same plus the three sets), and once
   per model the arm `cross` (the three sets only, no VIPeR identity). A finished run (its `done` marker) is
   skipped, a started one resumes (`--resume`); `--budget-s` stops launching runs after that many seconds;
3. report: per split, one `reidx report --trial K --format json` over that split's runs and the cross runs,
   then the tables: LR-query Rank-1/Rank-5/mAP, HR-query and ×8 Rank-1 as mean ± 95% CI over splits (Student
   t), G's PSNR beside bilinear's and D_F's last-epoch accuracy; the **paired** per-split differences
   CAD-Net − baseline per arm and viper+3 − viper per model. The cross row's spread is over test sets only.

Profiles: `cpu` (MobileNetV2 from the ImageNet file `--pretrained`, 128×48, the default) and `gpu` (the same at
256×128 on `--device cuda` with AMP; `benchmarks/gpu_study.sh` is its one prepared command). `--quick`: one split,
one epoch, 64×32 from scratch, one frame per id of every new set, MLR-VIPeR prepared with its first split only
(a smoke test of the pipeline, not a result; `--models baseline` halves it). `--models` and `--arms` pick the
runs to train and report (the cheap ones first, say). `--dry-run` prints every command it would run and runs none.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.studies import DONE, cell, diff_cell, reidx, train_run
from reidx.device import available_cpus
from reidx.metrics.stats import paired_ci
from reidx.report.evaluation import METHOD_BILINEAR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"

#: source -> (reader, folder below --data-root)
SOURCES = {"viper": ("viper", "VIPeR"), "3dpes": ("3dpes", "3DPeS"), "sarc3d": ("sarc3d", "SARC3D")}
SOURCES["towncentre"] = ("towncentre", "TownCentre")
NEW_SOURCES = ("3dpes", "sarc3d", "towncentre")
#: arm -> training sources
ARMS: dict[str, tuple[str, ...]] = {"viper": ("viper",), "viper+3": ("viper", *NEW_SOURCES), "cross": NEW_SOURCES}
MODELS = {"baseline": "--model baseline", "cadnet": "--model cadnet"}
#: report query set -> column: LR {2,3,4} mixed, HR queries, every query at the unseen rate 8
SETS = {"mixed": "LR", "hr": "HR", "r8": "x8"}
METRICS = ("LR R1", "LR R5", "LR mAP", "HR R1", "x8 R1")

#: profile -> train flags (besides the recipe), `reidx --device`, default epochs and input size
PROFILES = {
    "cpu": {
        "arch": "mobilenet_v2",
        "input_size": "128x48",
        "epochs": 15,
        "device": "",
        "extra": "--workers 2 --channels-last",
    },
    "gpu": {
        "arch": "mobilenet_v2",
        "input_size": "256x128",
        "epochs": 15,
        "device": "cuda",
        "extra": "--amp --workers 8",
    },
}
#: Chosen on 80 held-out training ids of split 0, never a test split (benchmarks/README.md, "The recipe"):
#: random erasing was the one technique that helped on its own (last-5-epoch validation Rank-1 43.5 against
#: 33.2); with the three extra sets the plateau comes by epoch 13-15 (hence the cpu profile's 15 epochs).
DEFAULT_RECIPE = "--optimizer adam --lr 3e-4 --lambda-rec 10 --residual-recovery --random-erasing 0.5"

#: key of one run: (arm, model, split); the cross arm's runs have split None (one run tested on every split)
RunKey = tuple[str, str, int | None]
Values = dict[tuple[str, str], dict[str, dict[int, float]]]  # (arm, model) -> metric -> split -> value


def prepare_flags(name: str, frames_per_id: int, quick: bool) -> str:
    """`reidx prepare` flags of one source: MLR-VIPeR's protocol, or a training-only set's frames per identity."""
    if name == "viper":
        return "--downsample 2,3,4 --unseen 8 --seed 0 " + ("--trials 1" if quick else "--trials 10")
    frames = 1 if quick else None if name == "sarc3d" else frames_per_id  # SARC3D: 4 views, not a track
    return "--downsample 2,3,4 --seed 0" + (f" --frames-per-id {frames}" if frames else "")


def prepare_all(data_root: Path, data: Path, frames_per_id: int, quick: bool, dry_run: bool) -> dict[str, Path]:
    """Prepare (once) MLR-VIPeR and the three training-only sets; return each source's dataset folder."""
    folders = {name: data / name for name in SOURCES}
    for name, (reader, folder) in SOURCES.items():
        if not (folders[name] / "manifest.parquet").is_file():
            flags = prepare_flags(name, frames_per_id, quick)
            reidx(f"prepare --dataset {reader} --root {data_root / folder} {flags} --out {folders[name]}", dry_run)
    return folders


def plan(splits: int, models: tuple[str, ...] = tuple(MODELS), arms: tuple[str, ...] = tuple(ARMS)) -> list[RunKey]:
    """Every run of ``arms`` in training order: split by split (each model on each VIPeR arm), the cross runs
    after split 0."""
    keys: list[RunKey] = []
    for split in range(splits):
        keys += [(arm, model, split) for arm in ("viper", "viper+3") if arm in arms for model in models]
        if split == 0 and "cross" in arms:
            keys += [("cross", model, None) for model in models]
    return keys


def run_dir(runs: Path, key: RunKey) -> Path:
    arm, model, split = key
    return runs / arm / model / ("all" if split is None else f"split{split}")


def train_flags(key: RunKey, folders: dict[str, Path], common: str) -> str:
    arm, model, split = key
    datasets = " ".join(f"--dataset {folders[source]}" for source in ARMS[arm])
    trial = "" if split is None else f" --trial {split}"
    return f"{datasets}{trial} {MODELS[model]} {common}"


def train_all(
    runs: Path,
    folders: dict[str, Path],
    keys: list[RunKey],
    common: str,
    device: str,
    budget_s: float,
    dry_run: bool,
    jobs: int = 1,
) -> bool:
    """Train, resume or skip every run of ``keys``, ``jobs`` side by side (each with its share of the CPU threads
    and its output in RUN.log beside its folder); stop launching after ``budget_s`` seconds. True if all are
    done; a failed run stops the study once the runs beside it have finished."""
    start, side_by_side = time.monotonic(), jobs > 1
    threads = max(1, available_cpus() // jobs) if side_by_side else None
    launched = []

    def train(key: RunKey) -> None:
        if time.monotonic() - start > budget_s:
            return
        launched.append(key)
        train_run(run_dir(runs, key), train_flags(key, folders, common), dry_run, device, threads, side_by_side)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(train, key) for key in keys]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if len(launched) < len(keys):
        print(f"time budget of {budget_s:.0f} s spent: run the same command again to continue", flush=True)
        return False
    return True


def checkpoint_of(run: Path, name: str) -> Path:
    """``run``'s ``name``.pt, or last.pt where there is no best.pt (a run without validation)."""
    chosen = run / f"{name}.pt"
    return chosen if chosen.is_file() else run / "last.pt"


def report_all(runs: Path, viper: Path, keys: list[RunKey], name: str, device: str, dry_run: bool) -> Values:
    """Per split, report that split's finished runs and the cross runs on its MLR-VIPeR test ids; the values."""
    values: Values = defaultdict(lambda: defaultdict(dict))
    prefix = f"--device {device} " if device else ""
    for split in sorted({key[2] for key in keys if key[2] is not None}):
        owners = {
            checkpoint_of(run_dir(runs, key), name).resolve(): key
            for key in keys
            if key[2] in (split, None) and ((run_dir(runs, key) / DONE).is_file() or dry_run)
        }
        if not owners:
            continue
        out = runs / "reports" / f"split{split}.json"
        every = " ".join(f"--checkpoint {path}" for path in owners)
        reidx(
            f"{prefix}report {every} --dataset {viper} --trial {split} --modes fused --format json --out {out}", dry_run
        )
        if not dry_run:
            collect(json.loads(out.read_text()), owners, split, values)
    for key in keys:  # finished runs only, as above: a running one's log stops at an early epoch
        accuracy = last_d_accuracy(run_dir(runs, key)) if (run_dir(runs, key) / DONE).is_file() else None
        if accuracy is not None:
            values[key[:2]]["D_F acc"][key[2] or 0] = accuracy
    return values


def collect(document: dict, owners: dict[Path, RunKey], split: int, values: Values) -> None:
    """Rank-1/5 and mAP per query set and G's PSNR (and bilinear's) of one split's report."""
    for entry in document["ranking"]:
        key = owners.get(Path(entry["checkpoint"]).resolve())
        if key and entry["set"] in SETS:
            for metric, label in (("rank1", "R1"), ("rank5", "R5"), ("mAP", "mAP")):
                values[key[:2]][f"{SETS[entry['set']]} {label}"][split] = 100 * entry[metric]
    for record in document["recovery"]:
        key = owners.get(Path(record["checkpoint"]).resolve())
        if key and record["set"] == "mixed":
            row = ("bilinear", "") if record["label"] == METHOD_BILINEAR else key[:2]
            values[row]["PSNR"][split] = record["psnr"]


def last_d_accuracy(run: Path) -> float | None:
    """D_F's balanced accuracy in the run's last logged epoch (None without one)."""
    log = run / "log.csv"
    if not log.is_file():
        return None
    rows = [row for row in csv.DictReader(log.open()) if row.get("acc_d_feature")]
    return float(rows[-1]["acc_d_feature"]) if rows else None


def tables(values: Values) -> str:
    """Means ± 95% CI per (arm, model), then the paired differences."""
    lines = [
        "| trained on | model | splits | LR R1 | LR R5 | LR mAP | HR R1 | ×8 R1 | G PSNR dB | D_F acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        for model in MODELS:
            metrics = values.get((arm, model))
            if metrics:
                sources = " + ".join(ARMS[arm])
                cells = [cell(metrics.get(name)) for name in METRICS]
                extra = [cell(metrics.get("PSNR"), 2), cell(metrics.get("D_F acc"), 2)]
                splits = len(metrics.get("LR R1", {}))
                lines.append(f"| {sources} | {model} | {splits} | " + " | ".join(cells + extra) + " |")
    if "PSNR" in values.get(("bilinear", ""), {}):
        lines.append(
            f"| bilinear up-sampling (reference) | | | | | | | | {cell(values[('bilinear', '')]['PSNR'], 2)} | |"
        )
    lines += [
        "",
        "| paired difference | splits | Δ LR R1 | Δ LR R5 | Δ LR mAP | Δ HR R1 | Δ ×8 R1 | Δ LR R1 per split |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs = [((arm, "cadnet"), (arm, "baseline")) for arm in ARMS]
    pairs += [(("viper+3", model), ("viper", model)) for model in MODELS]
    for a, b in pairs:
        if a in values and b in values:
            first, second = values[a], values[b]
            splits, _, _ = paired_ci(first.get("LR R1", {}), second.get("LR R1", {}))
            deltas = [diff_cell(first.get(name), second.get(name)) for name in METRICS]
            each = " ".join(f"{first['LR R1'][s] - second['LR R1'][s]:+.1f}" for s in splits)
            label = f"{a[0]} {a[1]} − {b[0]} {b[1]}"
            lines.append(f"| {label} | {len(splits)} | " + " | ".join(deltas) + f" | {each} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding VIPeR/, 3DPeS/, ...")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "study", help="work folder, outside the repository")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--splits", type=int, default=5, help="MLR-VIPeR splits to train and test (of 10)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument(
        "--arms", default=",".join(ARMS), help=f"training sources, comma-separated, of {', '.join(ARMS)}"
    )
    parser.add_argument("--epochs", type=int, help="default: the profile's")
    parser.add_argument("--input-size", help="HxW (default: the profile's)")
    parser.add_argument("--arch", help="default: the profile's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", type=Path, default=DEFAULT_WEIGHTS, help="ImageNet weights of --arch")
    parser.add_argument("--frames-per-id", type=int, default=4, help="TownCentre and 3DPeS frames kept per identity")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="extra `reidx train` flags of every run")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last", help="which checkpoint to test")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="launch no run after this many seconds")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs side by side, the CPU threads shared (2 on 2 cores: about 1.3x)"
    )
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    parser.add_argument("--quick", action="store_true", help="1 split, 1 epoch, 64x32, tiny data (a smoke test)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Values:
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    models = tuple(model for model in args.models.split(",") if model)
    if not models or set(models) - set(MODELS):
        raise SystemExit(f"--models {args.models}: use some of {', '.join(MODELS)}")
    arms = tuple(arm for arm in args.arms.split(",") if arm)
    if not arms or set(arms) - set(ARMS):
        raise SystemExit(f"--arms {args.arms}: use some of {', '.join(ARMS)}")
    out = args.out.resolve()
    if out.is_relative_to(ROOT):
        raise SystemExit(f"--out {out} is inside the repository {ROOT}: give a folder outside it, e.g. ../study")
    missing = [folder for _, folder in SOURCES.values() if not (args.data_root / folder).is_dir()]
    if missing and not args.dry_run:
        print(f"skipped: {', '.join(missing)} not found in {args.data_root}; pass --data-root", file=sys.stderr)
        return {}
    splits = 1 if args.quick else args.splits
    epochs = 1 if args.quick else args.epochs or profile["epochs"]
    size = "64x32" if args.quick else args.input_size or profile["input_size"]
    arch = args.arch or profile["arch"]
    init = f"--pretrained {args.pretrained}" if args.pretrained and not args.quick else "--no-pretrained"
    extra = "--batch-ids 8 --batch-instances 2 --workers 0" if args.quick else profile["extra"]
    common = f"--arch {arch} {init} --input-size {size} --epochs {epochs} --seed {args.seed} {extra}"
    common += f" {args.recipe}".rstrip()
    recipe = "-".join(args.recipe.replace("--", "").split()) or "defaults"
    tag = f"{'quick-' if args.quick else ''}{args.profile}-{arch}-{size}-e{epochs}-s{args.seed}-{recipe}"
    data = out / ("data-quick" if args.quick else "data")
    folders = prepare_all(args.data_root, data, args.frames_per_id, args.quick, args.dry_run)
    runs = out / "runs" / tag
    keys = plan(splits, models, arms)
    if not args.report_only and not train_all(
        runs, folders, keys, common, profile["device"], args.budget_s, args.dry_run, max(1, args.jobs)
    ):
        print("reporting the runs finished so far", flush=True)
    values = report_all(runs, folders["viper"], keys, args.checkpoint, profile["device"], args.dry_run)
    if args.dry_run:
        return values
    text = tables(values)
    print(f"\nMLR-VIPeR, LR queries {{2,3,4}} (cam_a) vs HR gallery (cam_b), {args.checkpoint}.pt; {common}")
    print("Rank-k and mAP in %, mean ± 95% CI over splits (Student t); the cross row: one run per model\n")
    print(text)
    (runs / "summary.md").write_text(text + "\n")
    print(f"\nthese tables: {runs / 'summary.md'}; per-split reports: {runs / 'reports'}")
    return values


if __name__ == "__main__":
    main()
