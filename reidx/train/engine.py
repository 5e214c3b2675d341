"""The trainer: independent HR and LR P×K batches per step, a generator step (E, G, F, C) then a
discriminator step (D_F, D_I) on detached tensors, per-epoch validation and resumable checkpoints.

The run directory's rules are in :mod:`reidx.train.run`, its files in :mod:`reidx.train.files`, the resume
state in :mod:`reidx.train.state`.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress, TaskID, TextColumn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from reidx.checkpoint import CheckpointFile, load_weights, save_checkpoint
from reidx.console import progress
from reidx.distributed import DistEnv, barrier
from reidx.errors import ReidxError, one_line
from reidx.io import atomic_path
from reidx.models import ReidModel, build_model, complete_config, model_options
from reidx.models.losses import DISCRIMINATOR, GENERATOR
from reidx.train.config import TrainConfig
from reidx.train.data import HRImages, LRImages, load_training_set
from reidx.train.distributed import check_in_sync, wrap
from reidx.train.files import (
    AMP_SKIPPED,
    BEST,
    LAST,
    LOG,
    RUN_ID,
    epoch_file,
    epoch_line,
    new_run_id,
    write_log,
    write_record,
)
from reidx.train.sampler import IdentityBatchSampler
from reidx.train.schedule import schedule_of
from reidx.train.state import capture, restore_checked, rng_state
from reidx.train.validation import build_validation_set, run_validation

HR_STREAM, LR_STREAM = 1, 2


class Trainer:
    """Trains one run. ``resume`` is the opened ``RUN/last.pt`` (:func:`reidx.checkpoint.open_checkpoint`);
    ``run_id`` goes into config.json and every checkpoint (default: a new one)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        env: DistEnv | None = None,
        resume: CheckpointFile | None = None,
        show_progress: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.run_id = run_id or new_run_id()
        self.env = env or DistEnv()
        self.device = self.env.device
        self.show_progress = show_progress and self.env.is_main
        self.data = load_training_set(config.dataset, config.trial, config.val_ids, config.seed)
        self.validation = build_validation_set(
            self.data.validation, self.data.rates, config.seed, self.data.protocol, self.data.query_camera
        )
        torch.manual_seed(config.seed)
        self.model = self._build_model(resume).to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.objective = self.model.objective(config)
        self.step_module = wrap(self.objective, self.env)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.opt_g = self._generator_optimizer()
        d_params = self.model.discriminator_parameters()
        self.opt_d = torch.optim.Adam(d_params, lr=config.d_lr, betas=config.d_betas) if d_params else None
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        batch = config.batch_ids * config.batch_instances
        self.steps_per_epoch = max(1, len(self.data.paths) // (batch * self.env.world_size))
        schedule = schedule_of(config, self.steps_per_epoch)
        # a function, not the Schedule object: LambdaLR would save an object's fields and restore them on resume
        self.scheduler = LambdaLR(self.opt_g, lambda step: schedule(step))
        self.samplers = {
            name: IdentityBatchSampler(
                self.data.labels,
                config.batch_ids,
                config.batch_instances,
                self.steps_per_epoch,
                config.seed,
                stream,
                self.env.rank,
                self.env.world_size,
            )
            for name, stream in (("hr", HR_STREAM), ("lr", LR_STREAM))
        }
        self.epoch, self.global_step = 0, 0
        self.history: list[dict[str, float]] = []
        self.best_rank1 = -1.0
        if resume is not None:
            self.load_state(resume)

    # --- construction -------------------------------------------------------------------------------------

    def _build_model(self, resume: CheckpointFile | None) -> ReidModel:
        """The configured model; a resumed one takes its weights and input normalisation from ``resume``."""
        c = self.config
        options = {name: getattr(c, name) for name in model_options(c.model) if hasattr(c, name)}
        if resume is not None:
            options.update(pretrained=False, input_norm=complete_config(resume.model_config)["input_norm"])
        return build_model(c.model, num_classes=self.data.num_classes, **options)

    def _generator_optimizer(self) -> torch.optim.Optimizer:
        c, params = self.config, self.model.generator_parameters()
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    # --- one step -----------------------------------------------------------------------------------------

    def autocast(self):
        return torch.autocast(self.device.type) if self.use_amp else nullcontext()

    def generator_step(self, hr_batch, lr_batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Update E, G, F, C on L (D_F and D_I are frozen meanwhile); return the terms and what D needs."""
        (x_h, y_h), (x_l, t_l, y_l) = self._to_device(hr_batch), self._to_device(lr_batch)
        self.opt_g.zero_grad(set_to_none=True)
        discriminators = self.model.discriminator_parameters()
        for param in discriminators:
            param.requires_grad_(False)
        try:
            with self.autocast():
                terms, saved = self.step_module(GENERATOR, x_h, y_h, x_l, t_l, y_l)
            self.scaler_g.scale(terms["total"]).backward()
        finally:
            for param in discriminators:
                param.requires_grad_(True)
        scale = self.scaler_g.get_scale() if self.use_amp else None
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        terms = {name: value.detach() for name, value in terms.items()}
        if scale is not None:  # the scaler lowers its scale exactly when it skipped the step (non-finite grads)
            terms[AMP_SKIPPED] = torch.tensor(float(self.scaler_g.get_scale() < scale), device=self.device)
        return terms, saved

    def discriminator_step(self, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Update D_F and D_I on the detached features / images of the generator step."""
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            terms = self.step_module(DISCRIMINATOR, saved)
        self.scaler_d.scale(terms["total"]).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return {("d_total" if name == "total" else name): value.detach() for name, value in terms.items()}

    def advance_schedule(self) -> None:
        """One lr-schedule step, counted in training steps whether or not AMP's gradient scaler skipped the
        optimiser's (it skips the first steps while it finds its scale, and torch would warn each run)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()

    def train_step(self, hr_batch, lr_batch) -> dict[str, float]:
        """One generator step, one discriminator step (when the generator step saved something for one: models
        with discriminators) and one lr-schedule step."""
        terms, saved = self.generator_step(hr_batch, lr_batch)
        if saved:
            terms.update(self.discriminator_step(saved))
        self.advance_schedule()
        self.global_step += 1
        values = torch.stack([value.float() for value in terms.values()]).tolist()
        return dict(zip(terms, values, strict=True))

    def _to_device(self, batch) -> list[torch.Tensor]:
        """The batch's tensors on the device, images (N×C×H×W) in the model's memory format."""
        return [
            tensor.to(self.device, non_blocking=True, memory_format=self.memory_format)
            if tensor.dim() == 4
            else tensor.to(self.device, non_blocking=True)
            for tensor in batch
        ]

    # --- epochs -------------------------------------------------------------------------------------------

    def loaders(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        """This epoch's (HR batch, LR batch) pairs; an unreadable image stops training with its one line."""
        c, pin = self.config, self.device.type == "cuda"
        datasets = {
            "hr": HRImages(self.data.paths, self.data.labels, c.input_size, c.random_erasing),
            "lr": LRImages(self.data.paths, self.data.labels, c.input_size, self.data.rates, c.random_erasing),
        }
        loaders = []
        for name, dataset in datasets.items():
            self.samplers[name].set_epoch(epoch)
            loaders.append(
                DataLoader(dataset, batch_sampler=self.samplers[name], num_workers=c.workers, pin_memory=pin)
            )
        try:
            yield from zip(*loaders, strict=True)
        except ReidxError as exc:  # from a worker, the message carries the worker's traceback
            last = one_line(exc.line(), 10_000, keep="last")
            raise ReidxError(last.removeprefix(f"{ReidxError.__module__}.{ReidxError.__name__}: ")) from None

    def train_epoch(self, epoch: int, bar: Progress | None = None, task: TaskID | None = None) -> dict[str, float]:
        """Run ``steps_per_epoch`` steps; return the epoch's mean loss terms, lr and throughput."""
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        images_per_step = 2 * self.config.batch_ids * self.config.batch_instances * self.env.world_size
        lr = self.scheduler.get_last_lr()[0]
        start = time.perf_counter()
        for step, (hr_batch, lr_batch) in enumerate(self.loaders(epoch), start=1):
            for name, value in self.train_step(hr_batch, lr_batch).items():
                sums[name] += value
            if bar is not None:
                speed = step * images_per_step / (time.perf_counter() - start)
                shown = " ".join(f"{name} {sums[name] / step:.3f}" for name in sums)
                bar.update(task, advance=1, description=f"epoch {epoch}", status=f"{shown} | {speed:.1f} img/s")
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "step": self.global_step, "lr": lr}
        row.update({name: total / self.steps_per_epoch for name, total in sums.items()})
        row.update(images_per_s=self.steps_per_epoch * images_per_step / seconds, seconds=seconds)
        return row

    def validate(self) -> dict[str, float]:
        """Validation metrics on the main rank (empty elsewhere, or without a validation split)."""
        if self.validation is None or not self.env.is_main:
            return {}
        return run_validation(self.model, self.validation, self.config.input_size, workers=0)

    def fit(self) -> dict[str, Any]:
        """Train up to ``config.epochs``; return a summary (untrained and final validation, best epoch)."""
        if self.env.is_main:
            write_record(self.run_dir, self.config, self.global_step > 0, self.run_id)
        if self.epoch == 0 and not self.history:
            self.history.append({"epoch": 0, "step": 0, **self.validate()})
        total = self.config.epochs * self.steps_per_epoch
        bar = progress(TextColumn("{task.fields[status]}")) if self.show_progress else None
        board = tensorboard_writer(self.run_dir) if self.env.is_main else None
        with bar or nullcontext():
            task = bar.add_task("train", total=total, completed=self.global_step, status="") if bar else None
            for epoch in range(self.epoch + 1, self.config.epochs + 1):
                row = self.train_epoch(epoch, bar, task)
                row.update(self.validate())
                if bar is not None:
                    bar.console.print(epoch_line(row), highlight=False)
                self.epoch = epoch
                self.history.append(row)
                check_in_sync(self.model, self.env)
                self.save(improved=row.get("val_rank1", -1.0) > self.best_rank1)
                if board:
                    for name, value in row.items():
                        board.add_scalar(name, value, epoch)
                barrier(self.env)
        if self.config.epochs == 0:
            self.save(improved=False)  # --epochs 0: the initialisation itself, a reference for reports
        if board:
            board.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        rows = [row for row in self.history if "val_rank1" in row and row["epoch"] > 0]
        best = max(rows, key=lambda row: row["val_rank1"], default=None)
        return {
            "run": str(self.run_dir),
            "model": self.config.model,
            "arch": self.config.arch,
            "epochs": self.epoch,
            "steps": self.global_step,
            "untrained": self.history[0] if self.history and self.history[0]["epoch"] == 0 else {},
            "final": self.history[-1] if self.history else {},
            "best_epoch": best["epoch"] if best else None,
            "checkpoint": str(self.run_dir / LAST),
        }

    # --- state --------------------------------------------------------------------------------------------

    def stateful(self) -> dict[str, Any]:
        """Every object whose ``state_dict`` a resume needs, by checkpoint name."""
        return {
            "optimizers": {"generator": self.opt_g, "discriminator": self.opt_d},
            "scheduler": self.scheduler,
            "scalers": {"generator": self.scaler_g, "discriminator": self.scaler_d},
            "samplers": self.samplers,
        }

    def train_state(self) -> dict[str, Any]:
        """Everything :meth:`load_state` needs, as plain tensors and Python types."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": self.config.to_dict(),
            "num_classes": self.data.num_classes,
            **capture(self.stateful()),
            "rng": rng_state(),
            "history": self.history,
            "best_rank1": self.best_rank1,
        }

    def meta(self) -> dict[str, Any]:
        """What every checkpoint of this run says about itself: options, every training source (identity,
        trial, ids, images: :func:`~reidx.train.data.source_record`), epoch, run id. ``dataset`` and ``trial`` name
        the first source that can be tested on (the only one before several sources; kept for older readers)."""
        sources = self.data.sources
        first = next((source for source in sources if not source["training_only"]), sources[0])
        identity = {key: first[key] for key in ("path", "manifest_sha256", "name", "seed", "rates", "unseen_rates")}
        return {
            RUN_ID: self.run_id,
            "train_config": self.config.to_dict(),
            "dataset": identity,
            "trial": first["trial"],
            "sources": sources,
            "epoch": self.epoch,
        }

    def load_state(self, checkpoint: CheckpointFile) -> None:
        """Restore a :meth:`train_state` checkpoint (the model must be the same network)."""
        if complete_config(checkpoint.model_config) != self.model.config:
            raise ReidxError(
                f"{checkpoint.path} holds {describe(checkpoint.model_config)}, but this run builds "
                f"{describe(self.model.config)}",
                "resume with the run's own dataset and options, or start a new run with another --out",
            )
        load_weights(self.model, checkpoint.state["model"], checkpoint.path)
        state = checkpoint.state["train"]
        restore_checked(self.stateful(), state, state.get("rng"), checkpoint.path)
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history = [dict(row) for row in state["history"]]
        self.best_rank1 = float(state["best_rank1"])

    def save(self, improved: bool) -> None:
        """Write last.pt (and epoch_N.pt, best.pt, log.csv) on the main rank."""
        if not self.env.is_main:
            return
        last, size = self.run_dir / LAST, self.config.input_size
        save_checkpoint(last, self.model, size, meta=self.meta(), train=self.train_state())
        if self.config.save_every and self.epoch % self.config.save_every == 0:
            with atomic_path(self.run_dir / epoch_file(self.epoch)) as tmp:
                shutil.copyfile(last, tmp)
        if improved:
            self.best_rank1 = self.history[-1]["val_rank1"]
            save_checkpoint(self.run_dir / BEST, self.model, size, meta=self.meta())
        write_log(self.run_dir / LOG, self.history)


def tensorboard_writer(run_dir: Path):
    """A TensorBoard writer into ``RUN/tensorboard`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def describe(model_config: dict[str, Any] | None) -> str:
    if not model_config:
        return "no model"
    return f"a {model_config.get('name')} {model_config.get('arch')} model for {model_config.get('num_classes')} ids"
