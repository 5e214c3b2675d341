"""Dataclass fields that carry their command-line flag: the request objects of ``reidx embed``, ``search`` and
``serve`` (:class:`reidx.gallery.layout.IndexSpec`, a backend's ``Options``, :class:`reidx.retrieval.jobs.EmbedJob`,
:class:`reidx.retrieval.search.SearchRequest`) declare each flag once, beside the field it sets;
:mod:`reidx.cli_options` turns them into the commands' options. A field without help is no flag (library only)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any

from reidx.errors import ReidxError


def flag_field(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    min: int | None = None,
    max: int | None = None,
    parser: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
) -> Any:
    """A dataclass field with its flag: the help, the flag's name (default ``--field-name``), bounds, a value
    parser, a metavar and choices (a registry's names, read when called)."""
    meta = {"help": help, "flag": flag, "min": min, "max": max, "parser": parser, "metavar": metavar}
    return field(default=default, metadata=meta | {"choices": choices})


def finite_number(flag: str) -> Callable[[str], float]:
    """The parser of a float option: a finite number, else one line naming ``flag`` (``inf``, ``nan`` and
    ``1e309`` parse as floats but are no score or rate)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ReidxError(f"{flag} {text} is not a finite number", f"give a number, e.g. {flag} 0.5")
        return value

    return parse
