"""Why does a CAD-Net run trail the baseline? Three measurements on TRAINING ids only (never the test split).

1. Resolution gap: PSNR of the bilinear-upsampled LR input against its HR original, per rate and input size.
   Near 35 dB there is nothing for G or D_F to do.
2. Memorisation: Rank-1 of each embedding mode on the run's held-out validation ids beside the same figure on
   as many ids it trained on (same protocol, same gallery size).
3. Resolution invariance: a fresh D_F learns to tell E(x_H) from E(x_L) on half of the training images and
   is scored on the other half (50% = E's features carry no resolution; RAIN's D_F, Adam 1e-4), beside
   the training D_F's own accuracy per epoch (``acc_d_feature`` in the run's log.csv).

    python -m benchmarks.diagnose_runs RUN [RUN ...] [--sizes 64x32,128x48]

RUN is a `reidx train` output folder (its last.pt says which dataset, trial and validation split it used).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from reidx.data.manifest import read_dataset
from reidx.data.transforms import downsample, to_model_input, to_unit_range
from reidx.evaluation.embed import iter_embeddings
from reidx.evaluation.embedders import TorchEmbedder
from reidx.io import load_image
from reidx.metrics import recovery_metrics
from reidx.models.discriminators import FeatureDiscriminator
from reidx.models.loading import build_network, open_model_checkpoint
from reidx.models.losses import FAKE, REAL, gan_loss
from reidx.train.config import parse_size
from reidx.train.data import load_training_set
from reidx.train.validation import ValidationSet, build_validation_set, rank_queries

PROBE_IMAGES, PROBE_STEPS, PROBE_BATCH = 256, 200, 32


def resolution_gap(paths: list[str], rates: list[int], size: tuple[int, int]) -> list[float]:
    """Mean PSNR (dB) of bilinear-upsampled LR inputs against their HR originals at ``size``, per rate."""
    images = [load_image(path) for path in paths]
    target = to_unit_range(torch.stack([to_model_input(image, size) for image in images]))
    gaps = []
    for rate in rates:
        upsampled = torch.stack([to_model_input(downsample(image, rate), size) for image in images])
        gaps.append(float(recovery_metrics(to_unit_range(upsampled), target, lpips=False).psnr.mean()))
    return gaps


@torch.no_grad()
def rank1_by_mode(model: torch.nn.Module, entries: ValidationSet, size: tuple[int, int]) -> dict[str, float]:
    """Multi-shot Rank-1 (%) of the LR queries of ``entries`` against their HR gallery, per embedding mode."""
    rank1 = {}
    for mode in model.embedding_modes:
        embedder = TorchEmbedder(model, size, mode)
        vectors = np.concatenate(list(iter_embeddings(embedder, entries.paths, rates=entries.rates)))
        rank1[mode] = 100 * rank_queries(vectors, entries)["rank1"]
    return rank1


def feature_probe(model: torch.nn.Module, paths: list[str], rates: list[int], size: tuple[int, int]) -> float:
    """Held-out accuracy (%) of a fresh D_F that tells E(x_H) from E(x_L) (train on half the images)."""
    rng = np.random.default_rng(0)
    images = [load_image(path) for path in paths[:PROBE_IMAGES]]
    with torch.no_grad():
        hr = torch.stack([to_model_input(image, size) for image in images])
        lr = torch.stack([to_model_input(downsample(image, int(rng.choice(rates))), size) for image in images])
        f_h, f_l = model.encoder(hr)[-1], model.encoder(lr)[-1]
    half = len(images) // 2
    torch.manual_seed(0)
    probe = FeatureDiscriminator(f_h.shape[1])
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-4, betas=(0.9, 0.99))
    for _ in range(PROBE_STEPS):
        pick_h, pick_l = torch.randint(0, half, (PROBE_BATCH,)), torch.randint(0, half, (PROBE_BATCH,))
        real, fake = probe.judge(f_h[pick_h], f_l[pick_l])
        loss = gan_loss(real, REAL) + gan_loss(fake, FAKE)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    probe.eval()
    with torch.no_grad():
        correct = (probe(f_h[half:]) > 0).float().mean() + (probe(f_l[half:]) <= 0).float().mean()
    return 50 * float(correct)


def training_accuracy(run: Path) -> list[float]:
    """The training D_F's accuracy (%) on its own batches, per epoch, from ``RUN/log.csv`` (empty for a
    baseline or a run logged before accuracies were)."""
    log = pd.read_csv(run / "log.csv")
    return [100 * value for value in log["acc_d_feature"].dropna()] if "acc_d_feature" in log else []


def diagnose(run: Path) -> dict[str, Any]:
    """Memorisation and invariance figures of one run, on its own dataset, trial and validation ids."""
    checkpoint = open_model_checkpoint(run / "last.pt")
    config, size = checkpoint.train_config, checkpoint.input_size
    model = build_network(checkpoint).eval()
    data = load_training_set(config["dataset"], config["trial"], config["val_ids"], config["seed"])
    held_out = build_validation_set(data.validation, data.rates, config["seed"], data.protocol, data.query_camera)
    if held_out is None:
        raise SystemExit(f"{run} trained without held-out ids (--val-ids 0): nothing to compare")
    sources = config["dataset"]
    frame, _ = read_dataset(sources if isinstance(sources, str) else sources[0])  # the first source's ids
    rows = frame[(frame["split"] == "train") & (frame["rate"] == 1) & (frame["trial"] == config["trial"])]
    rows = rows[rows["path"].isin(data.paths)]
    same_count = sorted(set(rows["pid"].tolist()))[: len(set(held_out.pids.tolist()))]
    trained = build_validation_set(
        rows[rows["pid"].isin(same_count)][["path", "pid", "camid"]].reset_index(drop=True),
        data.rates,
        config["seed"],
        data.protocol,
        data.query_camera,
    )
    return {
        "run": str(run),
        "held_out_rank1": rank1_by_mode(model, held_out, size),
        "trained_rank1": rank1_by_mode(model, trained, size),
        "probe_accuracy": feature_probe(model, data.paths, data.rates, size),
        "training_d_accuracy": training_accuracy(run),
        "dataset": config["dataset"],
        "rates": data.rates,
        "paths": data.paths,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="`reidx train` output folders")
    parser.add_argument("--sizes", default="64x32,128x48,256x128", help="input sizes for the resolution gap")
    args = parser.parse_args(argv)
    results = [diagnose(run) for run in args.runs]
    first = results[0]
    sizes = [parse_size(text) for text in args.sizes.split(",")]
    gaps = {f"{h}x{w}": resolution_gap(first["paths"][:200], first["rates"], (h, w)) for h, w in sizes}
    print(f"Resolution gap on {first['dataset']}: bilinear PSNR (dB) of LR inputs, 200 training images")
    print("| input | " + " | ".join(f"r={rate}" for rate in first["rates"]) + " |")
    print("|---|" + "---|" * len(first["rates"]))
    for size, values in gaps.items():
        print(f"| {size} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    print("\nRank-1 (%) held-out training ids / ids it trained on, per mode; fresh-D_F accuracy on held-out images;")
    print("the training D_F's accuracy on its own batches, epoch 1 → last")
    print("| run | " + " | ".join(("fused", "f", "g")) + " | D_F probe | training D_F |\n|---|---|---|---|---|---|")
    for result in results:
        held, seen = result["held_out_rank1"], result["trained_rank1"]
        cells = [f"{held[m]:.1f} / {seen[m]:.1f}" if m in held else "–" for m in ("fused", "f", "g")]
        trained = result["training_d_accuracy"]
        during = f"{trained[0]:.1f}% → {trained[-1]:.1f}%" if trained else "–"
        print(f"| {result['run']} | " + " | ".join(cells) + f" | {result['probe_accuracy']:.1f}% | {during} |")
    for result in results:
        del result["paths"]
    return {"resolution_gap": gaps, "runs": pd.DataFrame(results).to_dict("records")}


if __name__ == "__main__":
    main()
