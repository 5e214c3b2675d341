"""A declared option: a dataclass field that carries what its command-line flag shows.

``reidx train``'s options are such fields: the common ones in :class:`reidx.train.config.CommonOptions`, and
each model's own in its ``Options`` dataclass, in the model's module. The flags, their help and the TOML keys
are generated from them (:mod:`reidx.cli_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any


def option(
    default: Any,
    help: str,
    choices: Callable[[], Sequence[str]] | None = None,
    metavar: str = "",
    off: str = "",
    minimum: float | None = None,
    after: str = "",
) -> Any:
    """A field with what its flag shows: help, choices (a registry's names, read when called), metavar, and for
    a bool-or-path field the help of its ``--no-`` flag. ``minimum``: the least value a run accepts. ``after``
    (a model's option): the common option its flag follows in the help (default: the model's own options)."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, "off": off, "minimum": minimum, "after": after}
    return field(default=default, metadata=metadata)
