"""The ``reidx recover`` job: LR crops in, CAD-Net's recovered HR images G(E(x)) out.

Every input is resized (bilinear) to the model input size, recovered, and written as ``OUT/<stem>.png`` at
that size. With ground-truth HR images (matched by file stem) each image is scored with SSIM / PSNR
(/ LPIPS where its weights are on the machine) against the HR image at input size, beside the same
scores of the bilinear-upsampled LR input. ``grid`` writes rows LR (bilinear) | recovered | HR.
``OUT`` follows the safe-output rule (:mod:`reidx.outputs`): a new or empty folder, or one ``recover``
wrote, never containing an input; one writer at a time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.table import Table

from reidx.checkpoint import load_model
from reidx.console import console, progress
from reidx.data.loading import iterate_images
from reidx.data.transforms import to_model_input, to_pil, to_unit_range
from reidx.errors import ReidxError
from reidx.io import atomic_path, check_file_output, exclusive_lock, load_image, writing
from reidx.metrics import recovery_metrics
from reidx.outputs import KINDS, check_apart, existing_output, mark_output
from reidx.retrieval.inputs import expand_images

#: The grid shows at most this many rows (the first images, in input order).
GRID_ROWS = 32
KIND = "recovered"
METRICS = ("ssim", "psnr", "lpips")


@dataclass
class RecoveredImage:
    """One input, its recovered output and, with ground truth, the scores (recovered and bilinear)."""

    input: str
    output: str
    hr: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RecoveryReport:
    checkpoint: str
    out: str
    input_size: list[int]
    images: list[RecoveredImage]
    mean: dict[str, float | None]
    lpips: str  # "ok", or why LPIPS is n/a

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def match_ground_truth(inputs: list[Path], hr_dir: Path) -> list[Path]:
    """The HR image in ``hr_dir`` with the same stem as each input (missing or ambiguous = error)."""
    by_stem: dict[str, list[Path]] = {}
    for path in expand_images([hr_dir]):
        by_stem.setdefault(path.stem, []).append(path)
    matched = []
    for path in inputs:
        candidates = by_stem.get(path.stem, [])
        if len(candidates) != 1:
            problem = "no" if not candidates else f"{len(candidates)}"
            raise ReidxError(
                f"{problem} ground-truth images named {path.stem}.* in {hr_dir} (for {path})",
                "give --hr a folder with exactly one HR image per input, matched by file name without extension",
            )
        matched.append(candidates[0])
    return matched


def recover_images(
    inputs: list[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    *,
    hr: str | Path | None = None,
    grid: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    workers: int = 2,
) -> RecoveryReport:
    """Recover every image of ``inputs`` (files or folders) into ``out``; score against ``hr`` if given."""
    if grid is not None:
        check_file_output(grid, "--grid")
    paths = expand_images(inputs)
    stems = [path.stem for path in paths]
    if len(set(stems)) != len(stems):
        clash = next(stem for stem in stems if stems.count(stem) > 1)
        raise ReidxError(f"two inputs are named {clash}.*", "outputs are named by stem: recover them separately")
    loaded = load_model(checkpoint, device)
    if not loaded.model.can_recover:
        raise ReidxError(
            f"{checkpoint} holds a {loaded.name} model, which has no HR decoder and cannot recover images",
            "use a CAD-Net checkpoint (`reidx train --model cadnet`)",
        )
    truth = match_ground_truth(paths, Path(hr)) if hr is not None else None
    size, out = loaded.input_size, Path(out)
    records = [
        RecoveredImage(str(path), str(out / f"{path.stem}.png"), str(truth[i]) if truth else None)
        for i, path in enumerate(paths)
    ]
    sources = [*inputs, *paths, *([hr, *truth] if truth is not None else [])]
    check_apart(out, sources, inside=False)
    if grid is not None:
        check_apart(grid, [*sources, *(record.output for record in records)], "input or output", flag="--grid")
    with exclusive_lock(out, KINDS[KIND][0]):
        prepare_output_folder(out, [Path(record.output).name for record in records], grid)
        tiles: list[list[torch.Tensor]] = []
        per_image: dict[str, list[np.ndarray]] = {}
        lpips_reason = ""
        with progress() as bar:
            task = bar.add_task("recover", total=len(paths))
            for images, indices in iterate_images([str(p) for p in paths], size, batch_size, workers):
                recovered = loaded.model.recover(images.to(device)).float().cpu()
                for tensor, index in zip(recovered, indices.tolist(), strict=True):
                    with atomic_path(records[index].output) as tmp:
                        to_pil(tensor).save(tmp, format="PNG")
                targets = None
                if truth is not None:
                    targets = torch.stack([to_model_input(load_image(truth[i]), size) for i in indices.tolist()])
                    for name, pred in (("", recovered), ("bilinear_", images)):
                        result = recovery_metrics(to_unit_range(pred), to_unit_range(targets))
                        lpips_reason = result.lpips_reason or "ok"
                        for metric in METRICS:
                            values = getattr(result, metric)
                            per_image.setdefault(name + metric, []).append(
                                np.full(len(pred), np.nan) if values is None else values
                            )
                for row, index in enumerate(indices.tolist()):
                    if index < GRID_ROWS:
                        tiles.append([images[row], recovered[row]] + ([targets[row]] if targets is not None else []))
                bar.advance(task, len(indices))
        if grid is not None:
            write_grid(Path(grid), tiles)
    mean: dict[str, float | None] = {}
    for name, chunks in per_image.items():
        values = np.concatenate(chunks)
        for record, value in zip(records, values, strict=True):
            record.scores[name] = None if np.isnan(value) else float(value)
        mean[name] = None if np.isnan(values).all() else float(values.mean())
    return RecoveryReport(str(checkpoint), str(out), list(size), records, mean, lpips_reason)


def prepare_output_folder(out: Path, names: list[str], grid: str | Path | None) -> None:
    """Create (or reuse) ``out`` as a folder of recovered images under the safe-output rule, its marker
    listing the files this run writes (so a killed run's outputs stay reidx's)."""
    existing_output(out, KIND)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    inside = grid is not None and Path(grid).resolve().parent == out.resolve()
    mark_output(out, KIND, [*names, *([Path(grid).name] if inside else [])])


def write_grid(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """A PNG with one row per image: LR (bilinear) | recovered | HR (when given), each at input size."""
    height, width = rows[0][0].shape[1:]
    sheet = Image.new("RGB", (width * len(rows[0]), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(to_pil(tile), (c * width, r * height))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def print_report(report: RecoveryReport, as_json: bool = False) -> None:
    """JSON on stdout, or a rich table of the scores (or a one-line summary without ground truth)."""
    if as_json:
        console.print_json(report.to_json())
        return
    if not report.mean:
        console.print(
            f"recovered {len(report.images)} images into {report.out} at {report.input_size[0]}x{report.input_size[1]}"
        )
        return
    table = Table(title=f"Recovery vs HR ground truth ({report.input_size[0]}x{report.input_size[1]}, [0, 1])")
    table.add_column("image")
    columns = [*METRICS, *(f"bilinear_{name}" for name in METRICS)]
    for name in columns:
        table.add_column(name.replace("_", " "), justify="right")
    for record in report.images:
        table.add_row(Path(record.input).name, *(fmt(record.scores.get(name)) for name in columns))
    table.add_row("[bold]mean", *(f"[bold]{fmt(report.mean.get(name))}" for name in columns))
    console.print(table)
    if report.lpips != "ok":
        console.print(f"LPIPS n/a: {report.lpips}")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
