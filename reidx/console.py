"""Shared rich consoles and the progress bar every long job uses.

Markup is off on both consoles: file names, CSV cells and error messages are user text, printed literally
(``[red]x.jpg`` stays ``[red]x.jpg``, ``[height, width]`` is not swallowed). Styles are given as ``style=``
or :class:`rich.text.Text`, never as markup inside a string.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def progress(*extra_columns, transient: bool = False) -> Progress:
    """A progress bar on stderr (stdout stays clean for ``--json``)."""
    return Progress(
        TextColumn("{task.description}", style="bold blue", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=err_console,
        transient=transient,
    )


def json_text(value: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``value`` as standard JSON: a NaN or infinity (for which JSON has no words) is written as null, never as
    the ``NaN`` / ``Infinity`` that other JSON readers refuse."""
    return json.dumps(finite(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
