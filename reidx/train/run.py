"""``reidx train``: the run directory's rules and files, and the command's entry point and summary.

A run directory holds ``config.json`` (options, command lines, versions, seed), ``log.csv`` (one row per
epoch; row 0 is the untrained model's validation), ``last.pt`` (every epoch, everything needed to resume
exactly), ``epoch_N.pt`` (every ``save_every`` epochs) and ``best.pt`` (weights with the best validation
Rank-1). Every checkpoint carries its options, the identity of every dataset (source) it trained on and the
run's id (:mod:`reidx.train.files`). One process writes a run directory at a time (:func:`reidx.io.exclusive_lock`).

``--resume`` never starts over what a run finished, nor continues a folder from another run's checkpoint: a
folder without ``last.pt`` restarts from its ``config.json`` only while it holds nothing else (a run killed
before its first checkpoint), and ``last.pt`` must carry the run id its folder's ``config.json`` records.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from reidx.checkpoint import CheckpointFile
from reidx.console import console, emit_json, err_console
from reidx.data.manifest import INFO_NAME, MANIFEST_NAME, dataset_identity
from reidx.device import AUTO, Devices
from reidx.distributed import DistEnv, setup, teardown, together
from reidx.errors import ReidxError
from reidx.io import TEMPORARY, exclusive_lock
from reidx.models.loading import open_model_checkpoint
from reidx.train.config import (
    TrainConfig,
    build_config,
    read_config_file,
    resume_config,
)
from reidx.train.engine import Trainer
from reidx.train.files import (
    BEST,
    EPOCH,
    LAST,
    LOG,
    RECORD,
    RUN_ID,
    epoch_file,
    new_run_id,
    recorded_run_id,
    resume_fix,
)

#: What a run that stopped before its first checkpoint leaves (besides temporaries): a fresh run may start there.
BEFORE_FIRST_CHECKPOINT = frozenset({RECORD, "tensorboard"})
#: What a run writes from its first checkpoint on, besides its epoch_N.pt files.
CHECKPOINT_TRAIL = frozenset({LAST, BEST, LOG})
#: At most this many of a folder's file names in one message.
NAMES_SHOWN = 4


def run_training(
    out: str | Path,
    overrides: dict[str, Any],
    config_file: Path | None = None,
    resume: bool = False,
    devices: Devices = AUTO,
    show_progress: bool = True,
) -> dict[str, Any]:
    """``reidx train``: a fresh run into an empty ``out`` (or one a run left before its first checkpoint), or
    ``resume`` ``out/last.pt``. Under torchrun every rank calls this; rank 0 locks ``out`` and writes."""
    out = Path(out)
    env = setup(devices)
    try:
        with ExitStack() as stack:

            def start() -> tuple[TrainConfig, CheckpointFile | None, str]:
                if env.is_main:  # one writer; taking the lock removes the temporaries of killed writers
                    stack.enter_context(exclusive_lock(out, "training run"))
                given = {**(read_config_file(config_file) if config_file else {}), **overrides}
                if resume:
                    return resumed_config(out, given, env)
                return fresh_config(out, given), None, new_run_id()

            # every rank learns whether any refused (e.g. rank 0 finds the run locked) before going on together
            config, checkpoint, run_id = together(env, start)
            trainer = Trainer(config, out, env, resume=checkpoint, run_id=run_id, show_progress=show_progress)
            if checkpoint is not None and trainer.epoch >= config.epochs:
                return already_trained(trainer, config.epochs)
            if env.is_main and show_progress:
                for trunk, load in trainer.model.imagenet_loads().items():  # what each trunk took from its file
                    err_console.print(f"{trunk}: {load}", highlight=False, soft_wrap=True)
            return trainer.fit()
    finally:
        teardown(env)


def fresh_config(out: Path, given: dict[str, Any]) -> TrainConfig:
    """The options of a new run into ``out``, which must hold nothing but what a run leaves before its first
    checkpoint; the dataset path is made absolute."""
    if out.exists() and not out.is_dir():
        raise ReidxError(f"{out} already exists and is not a directory", "pass another --out")
    if out.is_dir() and any(not leftover(path) for path in out.iterdir()):
        raise ReidxError(f"{out} already exists and is not empty", "pass --resume to continue it, or another --out")
    config = build_config(given)
    if not config.dataset:
        raise ReidxError("no training dataset given", "pass --dataset DIR (a directory made by `reidx prepare`)")
    config.dataset = absolute_sources(config.dataset)
    return config


def absolute_sources(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The training sources as absolute paths; a source given twice is refused."""
    resolved = tuple(str(Path(path).resolve()) for path in paths)
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise ReidxError(f"--dataset {path} is given twice", "give each training source once")
    return resolved


def resumed_config(out: Path, given: dict[str, Any], env: DistEnv) -> tuple[TrainConfig, CheckpointFile | None, str]:
    """The options, checkpoint and run id to continue ``out`` with. A folder with a config.json but no last.pt
    starts again from the beginning with its recorded options only while it holds nothing a checkpoint left."""
    last, record = out / LAST, out / RECORD
    if not last.is_file():
        if not record.is_file():
            raise ReidxError(f"nothing to resume: {last} does not exist", "train without --resume first")
        finished = run_files(out)
        if finished:
            raise ReidxError(
                f"{out} has no {LAST} to resume, but holds {names(finished)}: starting it again would replace them",
                resume_fix(out),
            )
        if env.is_main:
            err_console.print(
                f"{out} has no checkpoint yet: starting it again from its {RECORD}", highlight=False, soft_wrap=True
            )
        return fresh_resume(out, read_config_file(record), given), None, recorded_run_id(out) or new_run_id()
    try:
        checkpoint = open_model_checkpoint(last)
    except ReidxError as exc:
        raise ReidxError(exc.message, resume_fix(out)) from None
    if "train" not in checkpoint.state:
        raise ReidxError(f"{last} holds no training state", resume_fix(out))
    run_id = check_run(out, checkpoint)
    config = resume_config(checkpoint.state["train"]["config"], given, out)
    config.dataset = resume_sources(out, checkpoint, given.get("dataset"), config.dataset)
    return config, checkpoint, run_id


def check_run(out: Path, checkpoint: CheckpointFile) -> str:
    """The id of the run ``out/last.pt`` continues: it must be the run ``out/config.json`` records (a folder
    holding nothing but ``last.pt`` takes the checkpoint's run; runs of an older reidx, without ids, get one)."""
    theirs = checkpoint.meta.get(RUN_ID)
    theirs = theirs if isinstance(theirs, str) else None
    if not (out / RECORD).is_file():
        others = [name for name in run_files(out) if name != LAST]
        if others:
            raise ReidxError(
                f"{out} holds {names(others)} but no {RECORD} to show that its {LAST} belongs with them",
                resume_fix(out),
            )
        return theirs or new_run_id()
    ours = recorded_run_id(out)
    if theirs != ours:
        raise ReidxError(
            f"{checkpoint.path} is another run's checkpoint (run {describe_run(theirs)}; {out / RECORD} records "
            f"run {describe_run(ours)}): resuming would replace this run's files",
            f"{resume_fix(out)}; resume the other run in its own folder",
        )
    return ours or new_run_id()


def describe_run(run_id: str | None) -> str:
    return run_id[:12] if run_id else "none (an older reidx)"


def run_files(out: Path) -> list[str]:
    """The names in ``out`` of the files a run writes from its first checkpoint on (a restart would replace
    them): last.pt, best.pt, log.csv, epoch_N.pt."""
    return sorted(path.name for path in out.iterdir() if path.name in CHECKPOINT_TRAIL or EPOCH.match(path.name))


def names(found: list[str]) -> str:
    """``a, b, c`` or ``a, b, c, d and 7 more``."""
    shown = ", ".join(found[:NAMES_SHOWN])
    return shown if len(found) <= NAMES_SHOWN else f"{shown} and {len(found) - NAMES_SHOWN} more"


def already_trained(trainer: Trainer, epochs: int) -> dict[str, Any]:
    """A resumed run with no epoch left to train: fewer ``epochs`` than it has is refused, as many is a note
    (nothing is written either way); the run's summary."""
    done, out = trainer.epoch, trainer.run_dir
    further = f"pass --resume --epochs N with N above {done} to train it further"
    if epochs < done:
        kept = out / epoch_file(epochs)
        model = f"; {kept} is the model after {epochs}" if kept.is_file() else ""
        raise ReidxError(
            f"{out} already has {done} epochs, more than --epochs {epochs}; nothing was changed{model}", further
        )
    if trainer.env.is_main:
        err_console.print(
            f"{out} already has its {done} epochs: nothing to train ({further})", highlight=False, soft_wrap=True
        )
    return trainer.summary()


def fresh_resume(out: Path, recorded: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The recorded options with the allowed changes of ``given``, for a run restarted from scratch."""
    config = resume_config(recorded, given, out)
    config.dataset = absolute_sources(config.dataset)
    return config


def resume_sources(
    out: Path, checkpoint: CheckpointFile, given: tuple[str, ...] | None, configured: tuple[str, ...]
) -> tuple[str, ...]:
    """The absolute source paths to continue on: the recorded ones, or ``given`` when they are the same sources in
    the same order (moved); another source list, or a folder re-prepared differently, is refused naming both."""
    saved = checkpoint.meta.get("sources")
    if saved is None and isinstance(checkpoint.meta.get("dataset"), dict):  # one source, before several
        saved = [checkpoint.meta["dataset"]]
    if not isinstance(saved, list):  # a version 1 checkpoint: only the (maybe relative) path is known
        path = Path(configured[0])
        if not (path / MANIFEST_NAME).is_file():
            raise ReidxError(
                f"{out} was trained on {configured[0]}, which is not a dataset seen from {Path.cwd()}",
                "pass --dataset with that dataset's directory",
            )
        return (str(path.resolve()),)
    if given is not None and len(given) != len(saved):
        raise ReidxError(
            f"{out} was trained on {len(saved)} source(s) ({', '.join(s['path'] for s in saved)}), "
            f"not the {len(given)} given",
            "resume with the run's own --dataset list (or none), or start a new run with another --out",
        )
    return tuple(
        resume_dataset(out, source, None if given is None else given[index]) for index, source in enumerate(saved)
    )


def resume_dataset(out: Path, saved: dict[str, Any], given: str | None) -> str:
    """The absolute path of one recorded source: where it was, or ``given`` when that is the same dataset."""
    path = Path(given or saved["path"])
    if not (path / MANIFEST_NAME).is_file() or not (path / INFO_NAME).is_file():
        fix = "pass --dataset with its new location" if not given else f"pass --dataset {saved['path']}"
        raise ReidxError(f"the dataset {out} trained on is not at {path}", fix)
    current = dataset_identity(path)
    keys = ("manifest_sha256", "seed", "rates", "unseen_rates")
    if any(current.get(key) != saved.get(key) for key in keys):
        raise ReidxError(
            f"{out} was trained on {describe_dataset(saved)}, but {describe_dataset(current)} is another dataset",
            "resume with the run's own dataset, or start a new run with another --out",
        )
    return current["path"]


def describe_dataset(identity: dict[str, Any]) -> str:
    """``PATH (name, seed S, rates 2,3,4, manifest 1a2b3c4d)``."""
    rates = ",".join(map(str, identity.get("rates", [])))
    return (
        f"{identity.get('path')} ({identity.get('name')}, seed {identity.get('seed')}, rates {rates}, "
        f"manifest {str(identity.get('manifest_sha256'))[:8]})"
    )


def leftover(path: Path) -> bool:
    """A file a run leaves before its first checkpoint (record, TensorBoard folder, temporaries)."""
    return path.name in BEFORE_FIRST_CHECKPOINT or TEMPORARY.match(path.name) is not None


def print_summary(summary: dict[str, Any], as_json: bool = False) -> None:
    """The run's summary as JSON, or one line per figure."""
    if as_json:
        emit_json(summary)
        return
    console.print(
        f"trained {summary['model']} ({summary['arch']}) for {summary['epochs']} epochs, {summary['steps']} steps"
    )
    for label, row in (("untrained", summary["untrained"]), ("final", summary["final"])):
        figures = [
            f"{name} {row[name]:.4g}"
            for name in ("val_rank1", "val_mAP", "val_psnr", "val_psnr_bilinear")
            if name in row
        ]
        if figures:
            console.print(f"{label}: " + ", ".join(figures))
    console.print(f"{best_epoch_line(summary)}; checkpoint: {summary['checkpoint']}")


def best_epoch_line(summary: dict[str, Any]) -> str:
    """Which epoch ``best.pt`` holds, or why there is none."""
    if summary["best_epoch"] is not None:
        return f"best validation epoch: {summary['best_epoch']} (best.pt)"
    if summary["epochs"] == 0:
        return "no epoch trained (--epochs 0): last.pt holds the initialised model, no best.pt"
    return "no validation (no held-out ids with two cameras): no best.pt, use last.pt"
