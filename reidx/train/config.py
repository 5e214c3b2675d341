"""Training configuration: one dataclass of named defaults, built from a TOML/JSON file and flags.

Every default says where it comes from (cadnet.md §0): **[L]** the authors' earlier RAIN code,
**[G]** a guess (the CAD-Net paper's implementation details are unknown), **[P]** the paper.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomllib
import torch
import torchvision

from reidx import __version__
from reidx.errors import ReidxError
from reidx.models import list_models
from reidx.models.backbones import list_backbones

OPTIMIZERS = ("sgd", "adam")
IMAGE_DISCRIMINATORS = ("patchgan", "resnet18")
#: Options that may differ from the saved run on ``--resume``; any other difference is an error.
RESUME_OVERRIDABLE = frozenset({"dataset", "epochs", "workers", "save_every", "amp"})
#: Options that do not matter on ``--resume`` (the weights come from the checkpoint).
RESUME_IGNORED = frozenset({"pretrained"})


@dataclass
class TrainConfig:
    """All choices of a training run. A ``[G]`` default is a guess: tune it and say so."""

    dataset: str = ""
    trial: int = 0  # which split of multi-trial datasets (CUHK03, VIPeR, CAVIAR)
    # model
    model: str = "cadnet"  # cadnet | baseline (same sampler, CE + triplet only)
    arch: str = "resnet50"  # [L] E and F are ImageNet ResNet-50 trunks (any registered backbone)
    pretrained: bool | str = True  # [L] ImageNet init; False = from scratch; a path = that torchvision file
    image_discriminator: str = "patchgan"  # [G] D_I is unknown: patchgan | resnet18 [L]
    discriminator_width: int = 32  # [G] PatchGAN base width (pix2pix: 64)
    decoder_skips: int = 4  # [G] E→G skips (f4..f1); RAIN's default used f4 only
    decoder_width_divisor: int = 4  # [G] G's widths = E's / this; RAIN's decoder is 1 (about 5 trunks of cost)
    residual_recovery: bool = False  # [G] x̃_H = x + G(f) (G adds detail to the bilinear input); paper: G(f)
    input_size: tuple[int, int] = (256, 128)  # [L] H×W
    # schedule and sampling
    epochs: int = 60  # [G] RAIN ran 250k steps; ~60 epochs of Market at 8×4 is ~24k
    batch_ids: int = 8  # [L] P identities per batch
    batch_instances: int = 4  # [L] K images per identity
    seed: int = 0
    # optimisers
    optimizer: str = "sgd"  # [L] for E, G, F, C; adam is offered for short from-scratch runs [G]
    lr: float = 1e-3  # [L]
    momentum: float = 0.9  # [L] (SGD only)
    weight_decay: float = 5e-4  # [L]
    poly_power: float = 0.9  # [L] lr·(1 − step/total)^power, generator side
    d_lr: float = 1e-4  # [L] Adam for D_F and D_I, constant
    d_betas: tuple[float, float] = (0.9, 0.99)  # [L]
    # losses (cadnet.md §3)
    lambda_id: float = 1.0  # [G] RAIN used w_cls 10 (1 when pre-training)
    lambda_tri: float = 1.0  # [G] RAIN used w_global 10
    margin: float = 2.0  # [L] batch-hard triplet margin on L2-normalised v (2 = the largest distance of unit
    # vectors, so the hinge never closes: every anchor keeps pulling its positive and pushing its negative)
    lambda_rec: float = 1.0  # [L]
    lambda_adv_feature: float = 0.01  # [L] λ_adv^{D_F}; also scales D_F's own loss (RAIN w_dis)
    lambda_adv_image: float = 0.01  # [G] λ_adv^{D_I} (cadnet.md suggests sweeping 0.01–1)
    adv_feature: bool = True  # ablation switch: False = w/o L_adv^{D_F}
    adv_image: bool = True  # ablation switch: False = w/o L_adv^{D_I}
    rec: bool = True  # ablation switch: False = w/o L_rec
    # engineering
    val_ids: float = 0.1  # [G] fraction of the training ids held out for validation (0 = none)
    save_every: int = 0  # also keep RUN/epoch_N.pt every N epochs (0 = only last.pt and best.pt)
    workers: int = 2  # data-loading processes per stream
    amp: bool = True  # mixed precision, used only on CUDA

    def validate(self) -> TrainConfig:
        """Raise ReidxError on a value no run can use; return self."""
        checks = [
            (self.model in list_models(), f"--model {self.model}", f"use one of {', '.join(list_models())}"),
            (self.arch in list_backbones(), f"--arch {self.arch}", f"use one of {', '.join(list_backbones())}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer}", "use sgd or adam"),
            (
                self.image_discriminator in IMAGE_DISCRIMINATORS,
                f"--image-discriminator {self.image_discriminator}",
                "use patchgan or resnet18",
            ),
            (self.epochs >= 0, f"--epochs {self.epochs}", "give 0 (save the untrained model) or more epochs"),
            (
                self.batch_ids >= 2 and self.batch_instances >= 2,
                f"--batch-ids {self.batch_ids} --batch-instances {self.batch_instances}",
                "the batch-hard triplet needs at least 2 ids × 2 images",
            ),
            (0.0 <= self.val_ids < 1.0, f"--val-ids {self.val_ids}", "give a fraction in [0, 1)"),
            (
                min(self.input_size) >= 32,
                f"--input-size {format_size(self.input_size)}",
                "use at least 32x32",
            ),
            (self.lr > 0 and self.d_lr > 0, f"learning rate {self.lr}/{self.d_lr}", "use positive rates"),
            (self.save_every >= 0 and self.workers >= 0, "--save-every/--workers", "use non-negative counts"),
        ]
        weights = (
            "lambda_id",
            "lambda_tri",
            "lambda_rec",
            "lambda_adv_feature",
            "lambda_adv_image",
            "margin",
        )
        checks += [(getattr(self, name) >= 0, f"{name} {getattr(self, name)}", "use >= 0") for name in weights]
        for ok, what, fix in checks:
            if not ok:
                raise ReidxError(f"invalid training option {what}", fix)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/checkpoint-safe values (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain values (unknown keys are an error naming ``source``)."""
        return cls(**coerce(values, source)).validate()


def pretrained_option(path: str | None, no_pretrained: bool) -> bool | str | None:
    """``--pretrained PATH`` / ``--no-pretrained`` as a config value (None when neither was given)."""
    if path is not None and no_pretrained:
        raise ReidxError("both --pretrained PATH and --no-pretrained were given", "keep one of them")
    return False if no_pretrained else path


def parse_size(text: str) -> tuple[int, int]:
    """``"256x128"`` → (256, 128)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ReidxError(f"cannot read input size {text!r}", "write it as HxW, e.g. 256x128") from None
    return height, width


def format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def coerce(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Normalise keys (dashes allowed) and the tuple-valued fields; reject unknown keys."""
    known = {field.name for field in fields(TrainConfig)}
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ReidxError(f"unknown training option {key!r} in {source}", f"use one of {', '.join(sorted(known))}")
        if name == "input_size":
            value = parse_size(value) if isinstance(value, str) else tuple(int(v) for v in value)
        elif name == "d_betas":
            value = tuple(float(v) for v in value)
        result[name] = value
    return result


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML file (flat keys = TrainConfig fields) or a run's ``config.json``."""
    if not path.is_file():
        raise ReidxError(f"config file not found: {path}", "pass an existing .toml or a run's config.json")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReidxError(f"cannot parse {path}: {exc}", "fix the file (TOML: key = value per line)") from None
    values = values.get("config", values)  # a run's config.json nests the options
    return coerce(values, str(path))


def build_config(overrides: dict[str, Any], config_file: Path | None = None) -> TrainConfig:
    """Defaults ← ``config_file`` ← ``overrides`` (the flags the user gave)."""
    values = read_config_file(config_file) if config_file else {}
    values.update(coerce(overrides, "the command line"))
    return TrainConfig(**values).validate()


def resume_config(saved: dict[str, Any], overrides: dict[str, Any], run: Path) -> TrainConfig:
    """The saved run's config with the allowed ``overrides``; any other differing option is an error."""
    config = coerce(saved, f"{run}/last.pt")
    for name, value in coerce(overrides, "the command line").items():
        if name in RESUME_IGNORED:
            continue
        if name in RESUME_OVERRIDABLE:
            config[name] = value
        elif value != config.get(name):
            raise ReidxError(
                f"{run} was trained with {name}={format_value(config.get(name))}, not {format_value(value)}",
                "drop that option to resume, or start a new run with another --out",
            )
    return TrainConfig(**config).validate()


def format_value(value: Any) -> str:
    return format_size(value) if isinstance(value, tuple) and len(value) == 2 else str(value)


def run_record(config: TrainConfig, commands: list[list[str]]) -> dict[str, Any]:
    """What ``RUN/config.json`` holds: the options, every command line that ran, versions and seed."""
    return {
        "config": config.to_dict(),
        "seed": config.seed,
        "commands": commands,
        "versions": {
            "reidx": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }


def command_line() -> list[str]:
    """This process's command line."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
