"""The rows of a report: checkpoints that differ only in the split they trained on pooled into one row (one
trial each), and row labels that name what differs between the rows (epochs, recipe options, sources)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidx.report.evaluation import CheckpointInfo

#: Options shown first in a label when they differ.
FIRST_OPTIONS = ("epochs",)
#: Recipe options a label never lists: the label's fixed part names them.
IN_LABEL = frozenset({"model", "arch"})


@dataclass
class RunGroup:
    """Checkpoints of one recipe, one per training split (a single checkpoint is a group of one)."""

    checkpoints: list[CheckpointInfo]
    label: str = ""
    options: dict[str, str] = field(default_factory=dict)
    sources: str = ""  # the training sources in words ("" when unknown)

    @property
    def key(self) -> str:
        """The group's identity in a report: its first checkpoint's path."""
        return self.checkpoints[0].path

    @property
    def first(self) -> CheckpointInfo:
        return self.checkpoints[0]


def split_of(checkpoint: CheckpointInfo) -> tuple[int, ...] | None:
    """The trials of the checkpoint's sources (None when a source's trial, or every source, is unknown)."""
    trials = tuple(source.trial for source in checkpoint.sources)
    return None if not trials or None in trials else trials  # type: ignore[return-value]


def split_text(checkpoint: CheckpointInfo) -> str:
    """``"3"``, or ``"3,0"`` for several sources."""
    return ",".join(str(trial) for trial in split_of(checkpoint) or ("?",))


def recipe_key(checkpoint: CheckpointInfo) -> str:
    """Everything that makes a model but the split it trained on."""
    c = checkpoint
    sources = [(s.path, s.manifest_sha256, s.name) for s in c.sources]
    what = {
        "model": c.model,
        "arch": c.arch,
        "input": list(c.input_size),
        "init": c.init,
        "file": c.name.split("/")[-1],
        "recipe": c.recipe,
        "sources": sources,
    }
    return json.dumps(what, sort_keys=True, default=str)


def group_checkpoints(checkpoints: list[CheckpointInfo], datasets: Sequence[tuple[str, str]] = ()) -> list[RunGroup]:
    """Checkpoints pooled by recipe, in order of first appearance; a recipe whose checkpoints do not each name a
    different split stays one row per checkpoint. Labels are set (:func:`label_groups`; ``datasets``: the test
    sets' (name, resolved directory))."""
    by_recipe: dict[str, list[CheckpointInfo]] = {}
    for checkpoint in checkpoints:
        by_recipe.setdefault(recipe_key(checkpoint), []).append(checkpoint)
    groups: list[RunGroup] = []
    for members in by_recipe.values():
        splits = [split_of(c) for c in members]
        if len(members) > 1 and (None in splits or len(set(splits)) < len(splits)):
            groups += [RunGroup([c]) for c in members]
        else:
            groups.append(RunGroup(members))
    label_groups(groups, datasets)
    return groups


def shown(value: Any) -> str:
    """An option's value in a label: ``on``/``off``, ``128x48``, ``0.0003``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(shown(v) for v in value)
    return str(value)


def group_options(group: RunGroup) -> dict[str, str]:
    """What a label may name about a group: its checkpoint file, input size and recipe options."""
    first = group.first
    options = {"file": first.name.split("/")[-1], "input": shown(first.input_size)}
    recipe = {key.replace("_", "-"): shown(value) for key, value in first.recipe.items() if key not in IN_LABEL}
    recipe.pop("input-size", None)
    return options | recipe


def sources_text(group: RunGroup, ambiguous: set[str]) -> str:
    """The group's training sources: ``viper``, ``viper (mlr-viper)`` where two datasets of the report share the
    name, with the trial for a single checkpoint (a group of several has one per split)."""
    texts = []
    for source in group.first.sources:
        text = f"{source.name} ({Path(source.path).name})" if source.name in ambiguous else source.name
        texts.append(text if len(group.checkpoints) > 1 or source.trial is None else f"{text} trial {source.trial}")
    return " + ".join(texts)


def label_groups(groups: list[RunGroup], datasets: Sequence[tuple[str, str]] = ()) -> None:
    """Label each group ``NAME [model, arch, init; OPTION VALUE, ...; trained on SOURCES]``, naming the
    options whose values differ between the groups (among those every group records)."""
    places: dict[str, set[str]] = {}
    for name, path in [*datasets, *((s.name, s.path) for g in groups for s in g.first.sources)]:
        places.setdefault(name, set()).add(path)
    ambiguous = {name for name, paths in places.items() if len(paths) > 1}
    for group in groups:
        group.options = group_options(group)
    keys = [key for key in groups[0].options if all(key in g.options for g in groups)] if groups else []
    differing = [key for key in keys if len({g.options[key] for g in groups}) > 1]
    differing.sort(key=lambda key: (key not in FIRST_OPTIONS, keys.index(key)))
    details = {}
    for group in groups:
        first = group.first
        parts = [f"{first.model}, {first.arch}, {first.init}"]
        if differing:
            parts.append(", ".join(f"{key} {group.options[key]}" for key in differing))
        if first.sources:
            group.sources = sources_text(group, ambiguous)
            parts.append(f"trained on {group.sources}")
        details[group.key] = "; ".join(parts)
        group.label = f"{group_name(group)} [{details[group.key]}]"
    labels = [g.label for g in groups]
    for group in groups:
        if labels.count(group.label) > 1:  # the same recipe and split twice: their paths tell them apart
            group.label = f"{group.first.path} [{details[group.key]}]"


def group_name(group: RunGroup) -> str:
    """``run/best.pt``, ``run/best.pt ×5`` (one run name on every split) or ``run0/best.pt … (5 runs)``."""
    names = list(dict.fromkeys(c.name for c in group.checkpoints))
    count = len(group.checkpoints)
    if count == 1:
        return names[0]
    return f"{names[0]} ×{count}" if len(names) == 1 else f"{names[0]} … ({count} runs)"
