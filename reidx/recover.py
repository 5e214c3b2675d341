"""The ``reidx recover`` job: LR crops in, CAD-Net's recovered HR images G(E(x)) out.

Every input is resized (bilinear) to the model input size, recovered, and written as ``OUT/<stem>.png`` at
that size. With ground-truth HR images (matched by file stem) each image is scored with SSIM / PSNR
(/ LPIPS where its weights are on the machine) against the HR image at input size, beside the same
scores of the bilinear-upsampled LR input. ``grid`` writes rows LR (bilinear) | recovered | HR.
``OUT`` follows the safe-output rule (:mod:`reidx.outputs`): a new or empty folder, or one ``recover``
wrote, never containing an input; one writer at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.table import Table
from torchvision.utils import make_grid

from reidx.checkpoint import LoadedModel
from reidx.console import console, emit_json, progress
from reidx.data.transforms import to_pil
from reidx.errors import ReidxError
from reidx.evaluation.recovery import MODEL, RecoveryScores, recover_batches
from reidx.images import expand_images
from reidx.io import atomic_path, exclusive_lock, writing
from reidx.io import check_file_output as check_file_shape
from reidx.metrics import RECOVERY_METRICS, RecoveryResult
from reidx.models.loading import load_model
from reidx.outputs import KINDS, MARKER_NAME, check_apart, check_file_output, existing_output, mark_output

#: The grid shows at most this many rows (the first images, in input order).
GRID_ROWS = 32
KIND = "recovered"


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
    if grid is not None and grid_inside(grid, out):  # written under --out's rule (its marker lists the grid)
        check_file_shape(grid, "--grid")
    elif grid is not None:
        check_file_output(grid, "--grid", "image", [*inputs, *([hr] if hr is not None else []), checkpoint])
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
    out = Path(out)
    records = [
        RecoveredImage(str(path), str(out / f"{path.stem}.png"), str(truth[i]) if truth else None)
        for i, path in enumerate(paths)
    ]
    sources = [*inputs, *paths, *([hr, *truth] if truth is not None else [])]
    check_apart(out, sources, inside=False)
    if grid is not None:
        check_apart(grid, [*sources, *(record.output for record in records)], "input or output", flag="--grid")
    with exclusive_lock(out, KINDS[KIND][0]):
        new = not out.exists()
        prepare_output_folder(out, [Path(record.output).name for record in records], grid)
        try:
            report = recover_into(loaded, paths, truth, records, grid, batch_size, workers)
        except BaseException:
            if new and {path.name for path in out.iterdir()} <= {MARKER_NAME}:  # failed before any image:
                (out / MARKER_NAME).unlink(missing_ok=True)  # the lock then removes the empty folder it made
            raise
    return RecoveryReport(str(checkpoint), str(out), list(loaded.input_size), records, *report)


def recover_into(
    loaded: LoadedModel,
    paths: list[Path],
    truth: list[Path] | None,
    records: list[RecoveredImage],
    grid: str | Path | None,
    batch_size: int,
    workers: int,
) -> tuple[dict[str, float | None], str]:
    """Write the recovered images of ``records`` (and the grid); ``(mean scores, LPIPS status)``."""
    size = loaded.input_size
    tiles: list[list[torch.Tensor]] = []
    scores = RecoveryScores()
    batches = recover_batches(
        loaded.model,
        [str(p) for p in paths],
        size,
        hr_paths=[str(p) for p in truth] if truth is not None else None,
        batch_size=batch_size,
        workers=workers,
    )
    with progress() as bar:
        task = bar.add_task("recover", total=len(paths))
        for batch in batches:
            for tensor, index in zip(batch.recovered, batch.indices.tolist(), strict=True):
                with atomic_path(records[index].output) as tmp:
                    to_pil(tensor).save(tmp, format="PNG")
            if batch.hr is not None:
                scores.add(batch)
            for row, index in enumerate(batch.indices.tolist()):
                if index < GRID_ROWS:
                    tiles.append([t[row] for t in (batch.lr, batch.recovered, batch.hr) if t is not None])
            bar.advance(task, len(batch.indices))
    if grid is not None:
        write_grid(Path(grid), tiles)
    return attach_scores(records, scores.results())


def attach_scores(
    records: list[RecoveredImage], results: dict[str, RecoveryResult]
) -> tuple[dict[str, float | None], str]:
    """Per-image scores into ``records`` (``psnr``, ``bilinear_psnr``, ...) and ``(means, LPIPS status)``:
    the status is "ok", the reason LPIPS is n/a, or "" without ground truth."""
    mean: dict[str, float | None] = {}
    for method, result in results.items():
        prefix = "" if method == MODEL else f"{method}_"
        for metric, average in result.summary().items():
            values = result.scores[metric]
            for i, record in enumerate(records):
                record.scores[prefix + metric] = None if values is None else float(values[i])
            mean[prefix + metric] = average
    reasons = [result.lpips_reason for result in results.values()]
    return mean, (reasons[-1] or "ok") if reasons else ""


def prepare_output_folder(out: Path, names: list[str], grid: str | Path | None) -> None:
    """Create (or reuse) ``out`` as a folder of recovered images under the safe-output rule, its marker
    listing the files this run writes (so a killed run's outputs stay reidx's)."""
    existing_output(out, KIND)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    inside = grid is not None and grid_inside(grid, out)
    mark_output(out, KIND, [*names, *([Path(grid).name] if inside else [])])


def grid_inside(grid: str | Path, out: str | Path) -> bool:
    """Whether the grid goes straight into the ``out`` folder (one of its files, not a file output of its own)."""
    return Path(grid).resolve().parent == Path(out).resolve()


def write_grid(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """A PNG with one row per image: LR (bilinear) | recovered | HR (when given), each at input size."""
    sheet = to_pil(make_grid(torch.stack([tile for row in rows for tile in row]), nrow=len(rows[0]), padding=0))
    with atomic_path(path, "image") as tmp:
        sheet.save(tmp, format="PNG")


def print_report(report: RecoveryReport, as_json: bool = False) -> None:
    """JSON on stdout, or a rich table of the scores (or a one-line summary without ground truth)."""
    if as_json:
        emit_json(asdict(report))
        return
    if not report.mean:
        console.print(
            f"recovered {len(report.images)} images into {report.out} at {report.input_size[0]}x{report.input_size[1]}"
        )
        return
    table = Table(title=f"Recovery vs HR ground truth ({report.input_size[0]}x{report.input_size[1]}, [0, 1])")
    table.add_column("image")
    columns = [*RECOVERY_METRICS, *(f"bilinear_{name}" for name in RECOVERY_METRICS)]
    for name in columns:
        table.add_column(name.replace("_", " "), justify="right")
    for record in report.images:
        table.add_row(Path(record.input).name, *(fmt(record.scores.get(name)) for name in columns))
    table.add_row("mean", *(fmt(report.mean.get(name)) for name in columns), style="bold")
    console.print(table)
    if report.lpips != "ok":
        console.print(f"LPIPS n/a: {report.lpips}")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
