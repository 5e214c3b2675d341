"""Training configuration: one dataclass of named defaults, built from a TOML/JSON file and flags.

:class:`TrainConfig` holds the options every run has (:class:`CommonOptions`) and, flat beside them, every
registered model's own (its ``Options`` dataclass, in the model's module): the flag, TOML key and config.json
key of a model's option is its field name. The class is put together on first use (it imports the models).

Every default says where it comes from (cadnet.md §0): **[L]** the authors' earlier RAIN code,
**[G]** a guess (the CAD-Net paper's implementation details are unknown), **[P]** the paper, **[B]** the strong
re-ID baseline of Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification" (CVPRW
2019), off by default unless measured to help here.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import sys
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import tomllib

from reidx import __version__
from reidx.errors import ReidxError, one_line
from reidx.options import option

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("poly", "step", "cosine")
#: Options that may differ from the saved run on ``--resume``; any other difference is an error.
RESUME_OVERRIDABLE = frozenset({"dataset", "epochs", "workers", "save_every", "amp", "channels_last"})
#: Options that do not matter on ``--resume`` (the weights come from the checkpoint).
RESUME_IGNORED = frozenset({"pretrained"})


def model_names() -> list[str]:
    """The model registry's names (imports the models, hence torch, only when called)."""
    from reidx.models import list_models

    return list_models()


def backbone_names() -> list[str]:
    """The backbone registry's names, for E and F (imports torch only when called)."""
    from reidx.models.backbones import list_backbones

    return list_backbones()


#: The common option after which a model's own options are listed, unless one says otherwise (``after``).
MODEL_OPTIONS_AFTER = "pretrained"


@dataclass
class CommonOptions:
    """The options of every training run, whatever its model (a model's own are in its ``Options``). A ``[G]``
    default is a guess: tune it and say so."""

    dataset: tuple[str, ...] = option(
        (),
        "Dataset directory written by `reidx prepare`; repeat it to train on the union of several training "
        "splits (identities kept apart per source).",
        metavar="PATH",
    )
    trial: int = option(
        0, "Split of a multi-trial dataset (CUHK03, VIPeR, CAVIAR); a one-trial training-only source uses its one."
    )
    # model
    model: str = option("cadnet", "Model; baseline = same sampler, CE + triplet only.", model_names)
    arch: str = option("resnet50", "[L] Backbone of E and F (the paper: an ImageNet ResNet-50 trunk).", backbone_names)
    pretrained: bool | str = option(
        True,
        "[L] ImageNet init: from torchvision's cache (true), from this weights file, or none (false).",
        metavar="PATH",
        off="Train from scratch (pretrained = false).",
    )
    bnneck: bool = option(
        False, "[B] BNNeck: retrieve with the feature after C's BatchNorm (the triplet stays on the one before)."
    )
    last_stride: int = option(2, "[B] Stride of the trunk's last down-sampling (1: f5 at stride 16, twice the map).")
    input_size: tuple[int, int] = option((256, 128), "[L] Model input HxW.", metavar="HxW")
    # schedule and sampling
    epochs: int = option(
        60, "[G] Epochs (0 saves the untrained model); RAIN ran 250k steps, ~60 epochs of Market at 8x4 is ~24k."
    )
    batch_ids: int = option(8, "[L] P identities per batch.")
    batch_instances: int = option(4, "[L] K images per identity.")
    seed: int = option(0, "Seed of sampling, augmentation and init.")
    # optimisers
    optimizer: str = option(
        "sgd", "[L] Optimiser of E, G, F, C; adam is offered for short from-scratch runs [G].", lambda: OPTIMIZERS
    )
    lr: float = option(1e-3, "[L] Learning rate of E, G, F, C.")
    momentum: float = option(0.9, "[L] SGD momentum.")
    weight_decay: float = option(5e-4, "[L] Weight decay of E, G, F, C.")
    lr_schedule: str = option(
        "poly",
        "[L] Generator-side decay after warm-up: poly lr·(1 − t)^power [L], step ÷10 at --lr-steps [B], cosine.",
        lambda: LR_SCHEDULES,
    )
    poly_power: float = option(0.9, "[L] Power of the poly schedule.")
    lr_steps: tuple[float, float] = option(
        (0.33, 0.58), "[B] Step schedule: lr ÷10 at these fractions of the run (Luo et al.: epochs 40, 70 of 120)."
    )
    warmup_epochs: int = option(0, "[B] Linear warm-up epochs from lr·--warmup-factor to lr (Luo et al.: 10).")
    warmup_factor: float = option(0.1, "[B] Warm-up's starting fraction of lr.")
    d_lr: float = option(1e-4, "[L] Adam learning rate of D_F and D_I (constant).")
    d_betas: tuple[float, float] = option((0.9, 0.99), "[L] Adam betas of D_F and D_I.")
    # losses (cadnet.md §3)
    lambda_id: float = option(1.0, "[G] Weight of L_id (RAIN used w_cls 10, 1 when pre-training).", minimum=0)
    lambda_tri: float = option(1.0, "[G] Weight of L_tri (RAIN used w_global 10).", minimum=0)
    # 2 = the largest distance of unit vectors, so the hinge never closes: every anchor keeps pulling its
    # positive and pushing its negative
    margin: float = option(2.0, "[L] Batch-hard triplet margin on the L2-normalised embedding.", minimum=0)
    label_smoothing: float = option(0.0, "[B] Label smoothing ε of L_id (Luo et al.: 0.1).")
    random_erasing: float = option(
        0.0, "[B] Random-erasing probability per training image (Luo et al.: 0.5); LR and its HR alike."
    )
    # engineering
    val_ids: float = option(
        0.1,
        "[G] Training ids held out for validation: a fraction below 1, or a count (e.g. 80); 0 = none. Ranked "
        "with the test's protocol and query camera.",
    )
    save_every: int = option(0, "Also keep RUN/epoch_N.pt every N epochs (0 = only last.pt and best.pt).")
    workers: int = option(2, "Data-loading processes per stream.")
    amp: bool = option(True, "Mixed precision, used only on CUDA.")
    channels_last: bool = option(
        False, "Channels-last memory format: faster convolutions (CAD-Net, 2 CPU cores: 1.3x), results alike."
    )


class ConfigMethods:
    """What a :class:`TrainConfig` does with its values (the base of that class; type hints here name it so,
    as TrainConfig is made on first use)."""

    def check(self) -> ConfigMethods:
        """Raise ReidxError on a value no run can use; return self."""
        checks = [
            (getattr(self, name) in names, f"--{flag(name)} {getattr(self, name)}", f"use one of {', '.join(names)}")
            for name, names in ((f.name, choices_of(f)) for f in fields(self))
            if names is not None
        ]
        checks += [
            (self.epochs >= 0, f"--epochs {self.epochs}", "give 0 (save the untrained model) or more epochs"),
            (
                self.batch_ids >= 2 and self.batch_instances >= 2,
                f"--batch-ids {self.batch_ids} --batch-instances {self.batch_instances}",
                "the batch-hard triplet needs at least 2 ids × 2 images",
            ),
            (
                0.0 <= self.val_ids < 1.0 or float(self.val_ids).is_integer(),
                f"--val-ids {self.val_ids:g}",
                "give a fraction in [0, 1) or a whole number of identities",
            ),
            (
                min(self.input_size) >= 32,
                f"--input-size {format_size(self.input_size)}",
                "use at least 32x32",
            ),
            (self.lr > 0 and self.d_lr > 0, f"learning rate {self.lr}/{self.d_lr}", "use positive rates"),
            (self.last_stride in (1, 2), f"--last-stride {self.last_stride}", "use 1 or 2"),
            (0.0 <= self.label_smoothing < 1.0, f"--label-smoothing {self.label_smoothing}", "give ε in [0, 1)"),
            (0.0 <= self.random_erasing <= 1.0, f"--random-erasing {self.random_erasing}", "give p in [0, 1]"),
            (
                self.warmup_epochs >= 0 and 0.0 < self.warmup_factor <= 1.0,
                f"--warmup-epochs {self.warmup_epochs} --warmup-factor {self.warmup_factor}",
                "give 0 or more epochs and a factor in (0, 1]",
            ),
            (
                0.0 < self.lr_steps[0] <= self.lr_steps[1] <= 1.0,
                f"--lr-steps {self.lr_steps[0]} {self.lr_steps[1]}",
                "give two increasing fractions of the run in (0, 1]",
            ),
            (self.save_every >= 0 and self.workers >= 0, "--save-every/--workers", "use non-negative counts"),
        ]
        checks += [
            (getattr(self, spec.name) >= low, f"{spec.name} {getattr(self, spec.name)}", f"use >= {low:g}")
            for spec in fields(self)
            if (low := spec.metadata.get("minimum")) is not None
        ]
        for ok, what, fix in checks:
            if not ok:
                raise ReidxError(f"invalid training option {what}", fix)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/checkpoint-safe values (tuples become lists; one training source stays a string, as it
        was written before several sources)."""
        values = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        if len(self.dataset) == 1:
            values["dataset"] = self.dataset[0]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> ConfigMethods:
        """Build from plain values (unknown keys are an error naming ``source``)."""
        return cls(**coerce(values, source)).check()


def _specs(options: type) -> list[tuple[str, Any, Field]]:
    """``(name, type, field)`` of each field of the dataclass ``options``, for :func:`make_dataclass`."""
    types = get_type_hints(options)
    return [
        (spec.name, types[spec.name], field(default=spec.default, metadata=spec.metadata)) for spec in fields(options)
    ]


@functools.cache
def config_class() -> type:
    """The :class:`TrainConfig` dataclass: the common options and every registered model's own, each model's
    listed after the common option it names (``after``; :data:`MODEL_OPTIONS_AFTER` by default). Two models
    may share an option only with the same type and default. Imports the models (torch) on the first call."""
    from reidx.models import list_models, model_class

    own: dict[str, tuple[str, Any, Field]] = {}
    for model in list_models():
        for name, kind, spec in _specs(model_class(model).Options):
            if name in own and (own[name][1], own[name][2].default) != (kind, spec.default):
                raise ValueError(f"model {model!r} redefines the training option {name!r} of another model")
            own.setdefault(name, (name, kind, spec))
    ordered = []
    for common in _specs(CommonOptions):
        ordered.append(common)
        ordered += [spec for spec in own.values() if (spec[2].metadata["after"] or MODEL_OPTIONS_AFTER) == common[0]]
    names = [name for name, _, _ in ordered]
    if len(set(names)) != len(own) + len(fields(CommonOptions)):
        raise ValueError("a model's training option clashes with a common one or follows no common option")
    config = make_dataclass("TrainConfig", ordered, bases=(ConfigMethods,))
    config.__module__ = __name__
    return config


def __getattr__(name: str) -> Any:
    """``TrainConfig``: the class of :func:`config_class`, built on first use (it imports the models)."""
    if name == "TrainConfig":
        return config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def choices_of(spec: Field) -> list[str] | None:
    """The allowed values of an option (from its registry), or None when any value of its type goes."""
    source = spec.metadata.get("choices")
    return None if source is None else list(source())


def flag(name: str) -> str:
    """The ``reidx train`` flag of a field, without the dashes: ``batch_ids`` → ``batch-ids``."""
    return name.replace("_", "-")


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


#: What a value of each TrainConfig field type must be, in the words of the error.
EXPECTED = {
    int: "an integer",
    float: "a finite number",
    bool: "true or false",
    str: "a string",
    bool | str: "true, false or a file path",
    tuple[int, int]: '"HxW" text or a [height, width] list of integers',
    tuple[float, float]: "a list of two finite numbers",
    tuple[str, ...]: "a path or a list of paths",
}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """An int, or a finite float (``inf`` and ``nan`` parse as floats from flags and TOML alike)."""
    return (_integer(value) and abs(value) < 2**63) or (isinstance(value, float) and math.isfinite(value))


def _pair(value: Any, item: Callable[[Any], bool]) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(item(v) for v in value)


#: Field types whose values are taken as they are, when they pass the check.
_AS_IS: dict[Any, Callable[[Any], bool]] = {
    int: _integer,
    bool: lambda value: isinstance(value, bool),
    str: lambda value: isinstance(value, str),
    bool | str: lambda value: isinstance(value, bool | str),
}


def convert(kind: Any, value: Any) -> Any:
    """``value`` as a field of type ``kind`` holds it (lists become tuples); TypeError when it is not one."""
    if kind in _AS_IS and _AS_IS[kind](value):
        return value
    if kind is float and _number(value):
        return float(value)
    if kind == tuple[int, int] and isinstance(value, str):
        return parse_size(value)
    if kind == tuple[int, int] and _pair(value, _integer):
        return tuple(value)
    if kind == tuple[float, float] and _pair(value, _number):
        return tuple(float(v) for v in value)
    if kind == tuple[str, ...] and isinstance(value, str):  # one path (every config before several sources)
        return (value,)
    if kind == tuple[str, ...] and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(EXPECTED[kind])


def value_text(value: Any, toml: bool = False) -> str:
    """A config value as text: as its flag takes it (on/off, ``HxW``, a pair space-separated: help defaults and
    messages), or with ``toml`` as a config file writes it. A pair of ints is a size (``HxW``) in both."""
    if isinstance(value, tuple) and len(value) == 2 and all(_integer(v) for v in value):
        value = format_size(value)
    if not toml:
        if isinstance(value, bool):
            return "on" if value else "off"
        return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if isinstance(value, list | tuple):
        return f"[{', '.join(value_text(v, toml=True) for v in value)}]"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's words: inf, -inf, nan
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def coerce(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Normalise keys (dashes allowed) and check each value's type (tuples built from lists or ``HxW``);
    an unknown key or a value of the wrong type is a one-line error naming ``source``."""
    specs = {spec.name: spec for spec in fields(config_class())}
    types = get_type_hints(config_class())
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in specs:
            raise ReidxError(f"unknown training option {key!r} in {source}", f"use one of {', '.join(sorted(specs))}")
        try:
            result[name] = convert(types[name], value)
        except (TypeError, ReidxError):
            raise ReidxError(
                f"{source}: {key} = {value_text(value, toml=True)} is not {EXPECTED[types[name]]}",
                f"write it like {key} = {value_text(specs[name].default, toml=True)}",
            ) from None
    return result


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML file (flat keys = TrainConfig fields) or a run's ``config.json``."""
    if path.is_dir():
        raise ReidxError(f"--config {path} is a folder", "pass the .toml file, or the config.json inside a run folder")
    if not path.is_file():
        raise ReidxError(f"config file not found: {path}", "pass an existing .toml or a run's config.json")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ReidxError(f"cannot read {path}: {exc.strerror}", "pass a readable .toml or config.json") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = one_line(exc)
        raise ReidxError(f"cannot parse {path}: {reason}", "fix the file (TOML: key = value per line)") from None
    if isinstance(values, dict):
        values = values.get("config", values)  # a run's config.json nests the options
    if not isinstance(values, dict):
        raise ReidxError(
            f"{path} holds a JSON {type(values).__name__}, not a table of training options",
            'write an object of options, e.g. {"epochs": 10}, or a TOML file of key = value lines',
        )
    return coerce(values, str(path))


def build_config(overrides: dict[str, Any], config_file: Path | None = None) -> ConfigMethods:
    """Defaults ← ``config_file`` ← ``overrides`` (the flags the user gave)."""
    values = read_config_file(config_file) if config_file else {}
    values.update(coerce(overrides, "the command line"))
    return config_class()(**values).check()


def resume_config(saved: dict[str, Any], overrides: dict[str, Any], run: Path) -> ConfigMethods:
    """The saved run's config with the allowed ``overrides``; any other differing option is an error."""
    config = coerce(saved, f"{run}/last.pt")
    for name, value in coerce(overrides, "the command line").items():
        if name in RESUME_IGNORED:
            continue
        if name in RESUME_OVERRIDABLE:
            config[name] = value
        elif value != config.get(name):
            raise ReidxError(
                f"{run} was trained with {name}={value_text(config.get(name))}, not {value_text(value)}",
                "drop that option to resume, or start a new run with another --out",
            )
    return config_class()(**config).check()


def run_record(config: ConfigMethods, commands: list[list[str]]) -> dict[str, Any]:
    """What ``RUN/config.json`` holds: the options, every command line that ran, versions and seed."""
    import torch
    import torchvision

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
