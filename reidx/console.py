"""Shared rich consoles and the progress bar every long job uses.

Markup is off on both consoles: file names, CSV cells and error messages are user text, printed literally
(``[red]x.jpg`` stays ``[red]x.jpg``, ``[height, width]`` is not swallowed). Styles are given as ``style=``
or :class:`rich.text.Text`, never as markup inside a string.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
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


def sub_task(bar: Progress, description: str) -> Callable[[int, int], None]:
    """``update(done, total)`` of a second line of ``bar``, added on the first call and removed when done."""
    task: list[TaskID] = []

    def update(done: int, total: int) -> None:
        if not task:
            task.append(bar.add_task(description, total=total))
        bar.update(task[0], completed=done)
        if done >= total:
            bar.remove_task(task.pop())

    return update


def json_text(value: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``value`` as standard JSON: a NaN or infinity (for which JSON has no words) is written as null, never as
    the ``NaN`` / ``Infinity`` that other JSON readers refuse."""
    return json.dumps(finite(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def emit_json(value: Any, sort_keys: bool = False) -> None:
    """Print ``value`` to stdout as standard JSON (see :func:`json_text`): every command's ``--json``."""
    sys.stdout.write(json_text(value, sort_keys=sort_keys) + "\n")
    sys.stdout.flush()


def finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def stdout_error(exc: OSError) -> str | None:
    """The one-line message for a failed write to stdout (a full disk under ``> FILE``, a reader that closed
    the pipe), None for an OSError of anything else (those name their file). Stdout is pointed at /dev/null
    so that the interpreter's last flush does not fail again."""
    if exc.filename is not None or exc.errno not in STDOUT_ERRORS:
        return None
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return f"cannot write the output to stdout: {STDOUT_ERRORS[exc.errno]}"


#: Why a write to stdout fails, in words.
STDOUT_ERRORS = {
    errno.EPIPE: "the program reading it closed the pipe",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file size limit is reached",
    errno.EIO: "an input/output error",
}
