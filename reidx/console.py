"""Shared rich consoles and the progress bar every long job uses.

Markup is off on both consoles: file names, CSV cells and error messages are user text, printed literally
(``[red]x.jpg`` stays ``[red]x.jpg``, ``[height, width]`` is not swallowed). Styles are given as ``style=``
or :class:`rich.text.Text`, never as markup inside a string.
"""

from __future__ import annotations

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
