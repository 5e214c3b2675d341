"""The ``reidx`` command line: parses options and delegates to the library. No logic lives here."""

from __future__ import annotations

import sys

import typer

from reidx import __version__
from reidx.console import err_console
from reidx.device import DEVICE_CHOICES
from reidx.errors import ReidxError

app = typer.Typer(
    name="reidx",
    help="Cross-resolution person re-identification (CAD-Net): prepare, train, recover, embed, search, report.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reidx {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    device: str = typer.Option("auto", "--device", help=f"Compute device: {' | '.join(DEVICE_CHOICES)}."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Cross-resolution person re-identification (CAD-Net, ICCV 2019)."""
    ctx.obj = {"device": device}


def _not_implemented(name: str) -> None:
    err_console.print(f"reidx {name}: not implemented yet")
    raise typer.Exit(2)


@app.command()
def prepare() -> None:
    """Build an MLR (multiple low-resolution) dataset: LR queries, HR gallery, manifest.

    Example: `reidx prepare --dataset synthetic --downsample 2,3,4 --out data/mlr-synth`
    """
    _not_implemented("prepare")


@app.command()
def train() -> None:
    """Train CAD-Net (or the baseline) on a prepared dataset.

    Example: `reidx train --dataset data/mlr-synth --out runs/cadnet --arch resnet18 --epochs 10`
    """
    _not_implemented("train")


@app.command()
def recover() -> None:
    """Recover HR images from LR crops with a trained CAD-Net.

    Example: `reidx recover lr/*.png --checkpoint runs/cadnet/last.pt --out recovered/`
    """
    _not_implemented("recover")


@app.command()
def embed() -> None:
    """Embed gallery images into a FAISS index directory.

    Example: `reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --out idx/`
    """
    _not_implemented("embed")


@app.command()
def search() -> None:
    """Search a gallery index with query images (any resolution).

    Example: `reidx search query.jpg --gallery idx/ --top-k 10`
    """
    _not_implemented("search")


@app.command()
def report() -> None:
    """Evaluate checkpoints on datasets and write paper-style result tables and plots.

    Example: `reidx report --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --out report.md`
    """
    _not_implemented("report")


def main() -> None:
    """Console-script entry point: user-fixable errors become one line on stderr and exit 1."""
    try:
        app()
    except ReidxError as exc:
        err_console.print(f"[bold red]error:[/] {exc.line()}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
