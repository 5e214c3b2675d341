"""A declared option: a dataclass field that carries what its command-line flag shows.

``reidx train``'s options are such fields (the common ones in :class:`reidx.train.config.CommonOptions`, each
model's own in its ``Options`` dataclass), and so are the request objects of ``embed``, ``search`` and ``serve``
(:class:`reidx.gallery.layout.IndexSpec`, a backend's ``Options``, :class:`reidx.retrieval.requests.EmbedJob`,
:class:`reidx.retrieval.requests.SearchRequest`, :class:`reidx.service.server.ServeOptions`). Each flag is declared
once, beside the field it sets; :mod:`reidx.cli_options` generates the flags, their help and the TOML keys. A
field without help is no flag (library only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any

from reidx.errors import ReidxError


def option(
    default: Any,
    help: str,
    choices: Callable[[], Sequence[str]] | None = None,
    metavar: str = "",
    off: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    after: str = "",
    flag: str = "",
    parser: Callable[[str], Any] | None = None,
) -> Any:
    """A field with what its flag shows: help, choices (a registry's names, read when called), metavar, and for
    a bool-or-path field the help of its ``--no-`` flag. ``minimum`` / ``maximum``: the range a value must fall
    in. ``after`` (a model's option): the common option its flag follows in the help (default: the model's own
    options). ``flag``: the flag's name when it is not ``--field-name``; ``parser``: turns the flag's text into
    the value."""
    metadata = {
        "help": help,
        "choices": choices,
        "metavar": metavar,
        "off": off,
        "minimum": minimum,
        "maximum": maximum,
        "after": after,
        "flag": flag,
        "parser": parser,
    }
    return field(default=default, metadata=metadata)


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
