"""``reidx prepare``: turn a dataset into an MLR dataset directory (protocols.md §2).

Per trial the reader splits the identities; every query image gets its own rate drawn uniformly from the
seen set (query set "mixed") and, for each unseen rate N, one more copy at N ("rN"); CAVIAR's queries are
genuine LR images used as they are ("native"). Train and gallery rows reference the HR originals in place.
LR images are written once per (image, rate) as PNG at round(native / r) under ``lr/rN/``. The whole
directory is built beside ``out`` and put in place only when complete, under the safe-output rule
(:mod:`reidx.outputs`): ``--overwrite`` replaces only a dataset reidx prepared, and ``out`` never overlaps
the source images.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from reidx.console import console, emit_json, progress
from reidx.data.base import DatasetReader, Options, Record, Source, existing_root
from reidx.data.manifest import DatasetInfo, write_dataset
from reidx.data.registry import get_reader
from reidx.data.transforms import downsample
from reidx.device import available_cpus
from reidx.errors import ReidxError
from reidx.io import load_image
from reidx.outputs import atomic_dir, check_apart

MIXED, NATIVE = "mixed", "native"
LR_FOLDER, HR_FOLDER = "lr", "hr"


def option_flag(name: str) -> str:
    """The ``reidx prepare`` flag of a reader option: ``images_per_camera`` → ``--images-per-camera``."""
    return "--" + name.replace("_", "-")


def parse_rates(text: str, option: str = "--downsample", allow_empty: bool = False) -> tuple[int, ...]:
    """``"2,3,4"`` -> ``(2, 3, 4)``; anything but integers >= 2 is a one-line error."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        rates = [int(part) for part in parts]
    except ValueError:
        raise ReidxError(f"{option} {text!r}: rates must be integers >= 2", "e.g. --downsample 2,3,4") from None
    return check_rates(rates, option, allow_empty)


def check_rates(rates: Iterable[int], option: str = "--downsample", allow_empty: bool = False) -> tuple[int, ...]:
    """Sorted distinct rates, each an integer >= 2; empty only where allowed."""
    rates = list(rates)
    if not rates and not allow_empty:
        raise ReidxError(f"{option} is empty: rates must be integers >= 2", "e.g. --downsample 2,3,4")
    if any(isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate < 2 for rate in rates):
        raise ReidxError(f"{option} {rates}: rates must be integers >= 2", "e.g. --downsample 2,3,4")
    return tuple(sorted({int(rate) for rate in rates}))


def default_workers() -> int:
    """Threads for image work: the CPUs this process may run on, at most 8."""
    return min(8, available_cpus())


def prepare_dataset(
    dataset: str,
    root: str | Path | None,
    out: str | Path,
    rates: Sequence[int] = (2, 3, 4),
    unseen_rates: Sequence[int] = (),
    seed: int = 0,
    trials: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    **reader_options: int | None,
) -> DatasetInfo:
    """Build the MLR dataset directory ``out`` from ``dataset`` at ``root``; return what was built.
    ``reader_options``: the optional :class:`~reidx.data.base.Options` (None = the reader's default)."""
    rates = check_rates(rates, "--downsample")
    unseen = check_rates(unseen_rates, "--unseen", allow_empty=True)
    reader = get_reader(dataset)
    given = {name: value for name, value in reader_options.items() if value is not None}
    check_arguments(reader, given, unseen, seed, trials, workers)
    options = Options(seed=seed, workers=workers or default_workers(), **given)
    source_root = existing_root(root, reader) if reader.needs_root else root
    out = Path(out).expanduser().resolve()
    if source_root is not None:
        check_apart(out, [source_root], "dataset root", inside=Path(source_root).is_dir())
    trials = trials or reader.trials
    with atomic_dir(out, "dataset", overwrite=overwrite) as tmp:
        source = reader.read(source_root, tmp / HR_FOLDER, options)
        check_apart(out, source_locations(source, tmp), "source images", inside=False)
        check_query_camera(source, given.get("query_camera"))
        frame, jobs = build_manifest(reader, source, options, rates, unseen, trials, tmp)
        counts = {} if reader.training_only else check_matches(frame)
        process_images(jobs, options.workers, f"prepare {dataset}")
        info = DatasetInfo(
            dataset=dataset,
            protocol=reader.protocol,
            rates=list(rates),
            unseen_rates=list(unseen),
            trials=trials,
            seed=seed,
            lr_camera=reader.lr_camera(source, options),
            training_only=reader.training_only,
            extra={
                "root": "" if source_root is None else str(source_root),
                "query_rule": reader.rule,
                "query_sets": sorted(counts),
                "valid_queries": counts,
                "summary": summarise(frame[frame["trial"] == 0]),
                **reader.settings(options),
            },
        )
        write_dataset(tmp, frame, info)
    return info


def check_arguments(
    reader: DatasetReader,
    given: dict[str, int],
    unseen: tuple[int, ...],
    seed: int,
    trials: int | None,
    workers: int | None,
) -> None:
    """Refuse options the dataset does not use and values out of range, each in one line."""
    unused = ", ".join(option_flag(name) for name in sorted(set(given) - reader.uses))
    if unused:
        raise ReidxError(f"{unused} does not apply to {reader.name}", f"drop {unused}")
    if reader.native_queries and unseen:
        raise ReidxError(
            f"{reader.name} queries are genuine low-resolution images; --unseen does not apply",
            "drop --unseen",
        )
    if reader.training_only and unseen:
        raise ReidxError(
            f"{reader.name} is for training only (no query images); --unseen does not apply", "drop --unseen"
        )
    for flag, value, low in (("--seed", seed, 0), ("--trials", trials, 1), ("--workers", workers, 1)):
        if value is not None and value < low:
            raise ReidxError(f"{flag} {value} is out of range", f"use {flag} >= {low}")
    for spec in fields(Options):
        low, value, flag = spec.metadata.get("minimum"), given.get(spec.name), option_flag(spec.name)
        if low is not None and value is not None and value < low:
            raise ReidxError(f"{flag} {value} is out of range", f"use {flag} >= {low}")


def source_locations(source: Source, workdir: Path) -> set[Path]:
    """The folders of the source images (bar those the reader made in ``workdir``) and the images that
    are links: what the output must not contain."""
    paths = {
        Path(record.path)
        for records in (source.train, source.query, source.gallery, source.images)
        for record in records
    }
    paths = {path for path in paths if not path.is_relative_to(workdir)}
    return {path.parent for path in paths} | {path for path in paths if path.is_symlink()}


def check_query_camera(source: Source, query_camera: int | None) -> None:
    """``--query-camera`` must name a camid the dataset has."""
    if query_camera is None:
        return
    camids = sorted({record.camid for record in source.images})
    if query_camera not in camids:
        raise ReidxError(f"--query-camera {query_camera} is not a camera of this dataset", f"use one of {camids}")


def stored_path(path: str, directory: Path) -> str:
    """Paths inside the dataset directory are stored relative to it, all others absolute."""
    candidate = Path(path)
    return candidate.relative_to(directory).as_posix() if candidate.is_relative_to(directory) else path


def lr_stems(records: Iterable[Record], source_root: Path) -> dict[str, str]:
    """Each source image's LR file name below ``lr/rN/`` (without ``.png``): its path below the dataset root
    without the suffix (a hashed name for images outside the root), or with the suffix where two sources
    would share a name (``a.jpg`` and ``a.png``); a name still shared is refused, naming both files."""
    paths = sorted({record.path for record in records})
    plain = {path: lr_stem(path, source_root, keep_suffix=False) for path in paths}
    shared = Counter(plain.values())
    stems = {
        path: lr_stem(path, source_root, keep_suffix=True) if shared[plain[path]] > 1 else plain[path] for path in paths
    }
    owner: dict[str, str] = {}
    for path, stem in stems.items():
        if stem in owner:
            raise ReidxError(
                f"{owner[stem]} and {path} would share the low-resolution file {LR_FOLDER}/rN/{stem}.png",
                "rename one of them",
            )
        owner[stem] = path
    return stems


def lr_stem(path: str, source_root: Path, keep_suffix: bool) -> str:
    """One source image's LR name below ``lr/rN/``, without ``.png``."""
    source = Path(path)
    if source.is_relative_to(source_root):
        below = source.relative_to(source_root)
        return (below if keep_suffix else below.with_suffix("")).as_posix()
    name = source.name if keep_suffix else source.stem
    return f"_outside/{hashlib.sha1(path.encode()).hexdigest()[:12]}_{name}"


def build_manifest(
    reader: DatasetReader,
    source: Source,
    options: Options,
    rates: tuple[int, ...],
    unseen: tuple[int, ...],
    trials: int,
    directory: Path,
) -> tuple[pd.DataFrame, dict[str, dict[int, Path]]]:
    """Every trial's rows, and the image work: for each source image, the LR files (rate -> path) to write.

    A source image with no LR file is still decoded once, so unreadable files fail here."""
    rows: list[tuple] = []
    jobs: dict[str, dict[int, Path]] = {}
    rngs = [np.random.default_rng([options.seed, trial]) for trial in range(trials)]
    splits = [reader.split(source, rng, options) for rng in rngs]
    listed = [*source.train, *source.query, *source.gallery, *source.images]
    stems = lr_stems(listed + [record for split in splits for record in split.query], source.root)

    def hr_rows(records: list[Record], split: str, trial: int) -> None:
        for record in records:
            path = stored_path(record.path, directory)
            rows.append((path, record.pid, record.camid, split, 1, path, trial, ""))
            jobs.setdefault(record.path, {})

    for trial, (rng, split) in enumerate(zip(rngs, splits, strict=True)):
        if not split.query and not reader.training_only:
            raise ReidxError(
                f"{reader.name} at {source.root} yields no query image", f"check the layout: {reader.layout}"
            )
        hr_rows(split.train, "train", trial)
        if reader.native_queries:
            query_sets = [(NATIVE, [1] * len(split.query))]
        else:
            drawn = rng.choice(np.array(rates), size=len(split.query)).tolist()
            query_sets = [(MIXED, drawn)] + [(f"r{rate}", [rate] * len(split.query)) for rate in unseen]
        for name, query_rates in query_sets:
            for record, rate in zip(split.query, query_rates, strict=True):
                source_path = stored_path(record.path, directory)
                path = f"{LR_FOLDER}/r{rate}/{stems[record.path]}.png" if rate > 1 else source_path
                targets = jobs.setdefault(record.path, {})
                if rate > 1:
                    targets[rate] = directory / path
                rows.append((path, record.pid, record.camid, "query", rate, source_path, trial, name))
        hr_rows(split.gallery, "gallery", trial)
    columns = ["path", "pid", "camid", "split", "rate", "source", "trial", "query_set"]
    return pd.DataFrame(rows, columns=columns), jobs


def check_matches(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Per query set, ``[queries with a same-pid gallery image from another camera, queries]`` over all
    trials; none at all is refused in one line that names the cause (lessons.md §3)."""
    gallery_cameras: dict[tuple[int, int], set[int]] = defaultdict(set)
    for trial, pid, camid in frame.loc[frame["split"] == "gallery", ["trial", "pid", "camid"]].itertuples(index=False):
        gallery_cameras[trial, pid].add(camid)
    counts: dict[str, list[int]] = {}
    queries = frame.loc[frame["split"] == "query", ["query_set", "trial", "pid", "camid"]]
    for name, trial, pid, camid in queries.itertuples(index=False):
        valid = bool(gallery_cameras.get((trial, pid), set()) - {camid})
        count = counts.setdefault(name, [0, 0])
        count[0] += valid
        count[1] += 1
    if all(valid == 0 for valid, _ in counts.values()):
        first = queries[queries["query_set"] == queries["query_set"].iloc[0]]
        alone = sum(
            (trial, pid) not in gallery_cameras for trial, pid in first[["trial", "pid"]].itertuples(index=False)
        )
        raise ReidxError(
            f"0 of {len(first)} queries have a gallery image of the same person from another camera "
            f"(evaluation never counts same-camera matches): {alone} have no gallery image of their person "
            f"at all, {len(first) - alone} only ones from their own camera",
            "put other images of each query person in the gallery (the CSV split column, the query/ and gallery/ "
            "folders, or --query-camera)"
            if 2 * alone > len(first)
            else "give query and gallery images different camids (PID_cCAM file names or the CSV camid column)",
        )
    return counts


def decode_and_write(item: tuple[str, dict[int, Path]]) -> None:
    """Decode one source image (naming it if unreadable) and write its LR versions."""
    source, targets = item
    image = load_image(source)
    for rate, target in targets.items():
        downsample(image, rate).save(target, format="PNG")


def process_images(jobs: dict[str, dict[int, Path]], workers: int, description: str) -> None:
    """Run :func:`decode_and_write` over ``jobs`` in threads (PIL releases the GIL), with a progress bar."""
    for folder in {target.parent for targets in jobs.values() for target in targets.values()}:
        folder.mkdir(parents=True, exist_ok=True)
    run_parallel(decode_and_write, sorted(jobs.items()), workers, description)


def run_parallel(function: Callable, items: Sequence, workers: int, description: str) -> None:
    """``function`` over ``items`` in a thread pool; the first error cancels what has not started."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        with progress(transient=True) as bar:
            task = bar.add_task(description, total=len(items))
            for _ in pool.map(function, items):
                bar.advance(task)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summarise(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """ids / images / cameras per split (query per query set) of one trial."""
    summary = {}
    for (split, name), group in frame.groupby(["split", "query_set"], sort=False):
        key = f"query ({name})" if split == "query" else split
        summary[key] = {
            "ids": int(group["pid"].nunique()),
            "images": len(group),
            "cameras": int(group["camid"].nunique()),
        }
    return summary


def print_summary(info: DatasetInfo, out: str | Path, as_json: bool = False) -> None:
    """The built dataset as a rich table, or as JSON on stdout."""
    if as_json:
        emit_json({"out": str(Path(out).resolve()), **asdict(info)}, sort_keys=True)
        return
    rates = ",".join(map(str, info.rates)) + (
        f" (unseen {','.join(map(str, info.unseen_rates))})" if info.unseen_rates else ""
    )
    table = Table(title=f"{info.dataset}: {info.protocol}, {info.trials} trial(s), seed {info.seed} — {out}")
    for column in ("split (trial 0)", "ids", "images", "cameras", "valid queries (all trials)"):
        table.add_column(column, justify="left" if column.startswith("split") else "right")
    valid = info.extra.get("valid_queries", {})
    for key, row in info.extra.get("summary", {}).items():
        name = key[len("query (") : -1] if key.startswith("query (") else ""
        matches = f"{valid[name][0]}/{valid[name][1]}" if name in valid else ""
        table.add_row(key, str(row["ids"]), str(row["images"]), str(row["cameras"]), matches)
    console.print(table)
    console.print(f"rates {rates}; LR side: {info.lr_camera}; {info.extra.get('query_rule', '')}", highlight=False)
