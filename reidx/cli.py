"""The ``reidx`` command line: parses options and delegates to the library. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
def prepare(
    dataset: Annotated[str, typer.Option(help="market1501|dukemtmc|cuhk03|viper|caviar|folder|synthetic")],
    out: Annotated[Path, typer.Option(help="Output dataset directory.")],
    root: Annotated[Path | None, typer.Option(help="Dataset folder (a CSV file for `folder`).")] = None,
    downsample: Annotated[str, typer.Option(help="Seen rates r (integers >= 2), comma-separated.")] = "2,3,4",
    unseen: Annotated[str, typer.Option(help="Extra query sets, every query at this rate, e.g. 8.")] = "",
    seed: Annotated[int, typer.Option(help="Seed of every random choice (splits, rates, images).")] = 0,
    trials: Annotated[int | None, typer.Option(help="Random splits (default: the protocol's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    workers: Annotated[int | None, typer.Option(help="Image threads (default: CPUs, at most 8).")] = None,
    test_ids: Annotated[int | None, typer.Option(help="Test ids per trial (default: protocol's).")] = None,
    query_camera: Annotated[int | None, typer.Option(help="viper/synthetic/folder: the query camid.")] = None,
    ids: Annotated[int | None, typer.Option(help="synthetic: identities (default 100).")] = None,
    cameras: Annotated[int | None, typer.Option(help="synthetic: cameras (default 4).")] = None,
    images_per_camera: Annotated[int | None, typer.Option(help="synthetic: images per id+camera.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Build an MLR (multi-low-resolution) dataset: LR queries, HR gallery, manifest (see data/README.md).

    Examples:

    * `reidx prepare --dataset synthetic --out data/mlr-synth`
    * `reidx prepare --dataset market1501 --root ~/reid/market1501 --unseen 8 --out data/mlr-market`
    * `reidx prepare --dataset viper --root ../shared/data/VIPeR --downsample 2,3,4 --out data/mlr-viper`
    * `reidx prepare --dataset folder --root my_images.csv --downsample 4 --out data/mine --json`
    """
    from reidx.data.prepare import parse_rates, prepare_dataset, print_summary

    info = prepare_dataset(
        dataset,
        root,
        out,
        rates=parse_rates(downsample, "--downsample"),
        unseen_rates=parse_rates(unseen, "--unseen", allow_empty=True),
        seed=seed,
        trials=trials,
        overwrite=overwrite,
        workers=workers,
        test_ids=test_ids,
        query_camera=query_camera,
        ids=ids,
        cameras=cameras,
        images_per_camera=images_per_camera,
    )
    print_summary(info, out, as_json=json_output)


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
def embed(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (.pt) written by `reidx train`.")],
    out: Annotated[Path, typer.Option(help="Index directory to write (or to --append to).")],
    images: Annotated[list[Path] | None, typer.Argument(help="Images or folders (or --dataset).")] = None,
    dataset: Annotated[Path | None, typer.Option(help="A dataset written by `reidx prepare`.")] = None,
    split: Annotated[str, typer.Option(help="--dataset split: train | query | gallery.")] = "gallery",
    trial: Annotated[int | None, typer.Option(help="--dataset trial (needed when it has several).")] = None,
    mode: Annotated[str, typer.Option(help="Embedding: fused | f | g (CAD-Net only).")] = "fused",
    index: Annotated[str | None, typer.Option(help="flat (exact, default) | ivfpq (approximate).")] = None,
    nlist: Annotated[int, typer.Option(help="ivfpq inverted lists (0: about 4·sqrt(N)).", min=0)] = 0,
    pq_m: Annotated[int, typer.Option(help="ivfpq bytes per vector (0: auto; divides the dim).", min=0)] = 0,
    nprobe: Annotated[int, typer.Option(help="ivfpq default lists visited per query (0: auto).", min=0)] = 0,
    append: Annotated[bool, typer.Option("--append", help="Add to the index in --out (new paths).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an index in --out.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per model batch.", min=1)] = 64,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.", min=0)] = 2,
    json_output: Annotated[bool, typer.Option("--json", help="Print the header and counts as JSON.")] = False,
) -> None:
    """Embed gallery images into a FAISS index directory (header.json, index.faiss, metadata.parquet).

    An interrupted run resumes when started again with the same arguments.

    Examples:

    * `reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --out idx/`
    * `reidx embed --checkpoint runs/cadnet/last.pt photos/ cam2/*.jpg --out idx/ --mode g`
    * `reidx embed --checkpoint runs/cadnet/last.pt new_photos/ --out idx/ --append`
    * `reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-market --out idx/ --index ivfpq`
    """
    from reidx.checkpoint import load_model
    from reidx.device import resolve_device
    from reidx.retrieval import build_index
    from reidx.retrieval.inputs import gallery_table

    device = ctx.obj["device"]
    table = gallery_table(images or [], dataset, split, trial)
    loaded = load_model(checkpoint, resolve_device(device))
    result = build_index(
        loaded,
        table,
        out,
        mode=mode,
        index_type=index,
        nlist=nlist,
        pq_m=pq_m,
        nprobe=nprobe,
        append=append,
        overwrite=overwrite,
        batch_size=batch_size,
        workers=workers,
        device=device,
    )
    result.show(as_json=json_output)


@app.command()
def search(
    ctx: typer.Context,
    queries: Annotated[list[Path], typer.Argument(help="Query images or folders, any resolution.")],
    gallery: Annotated[Path, typer.Option(help="Index directory written by `reidx embed`.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the header's).")] = None,
    top_k: Annotated[int, typer.Option(help="Results per query.", min=1)] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    montage: Annotated[Path | None, typer.Option(help="Write a PNG of each query and its top-k.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Score under which 'not in gallery'.")] = None,
    nprobe: Annotated[int | None, typer.Option(help="ivfpq lists visited per query.", min=1)] = None,
    query_pid: Annotated[int | None, typer.Option(help="The queries' identity, for montage borders.")] = None,
    batch_size: Annotated[int, typer.Option(help="Query images per model batch.", min=1)] = 64,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.", min=0)] = 2,
) -> None:
    """Search a gallery index with query images (any resolution; embedded exactly like the gallery).

    Scores are cosine similarities (inner products of L2-normalised embeddings), ties in gallery order.

    Examples:

    * `reidx search query.jpg --gallery idx/ --top-k 10`
    * `reidx search lr_crops/ --gallery idx/ --json --min-score 0.6`
    * `reidx search 0002_c1s1_000451_03.jpg --gallery idx/ --montage hits.png`
    """
    from reidx.retrieval.inputs import expand_images
    from reidx.retrieval.montage import draw_montage
    from reidx.retrieval.search import open_gallery, print_results, results_json, search_images

    index, loaded = open_gallery(gallery, checkpoint, ctx.obj["device"])
    results = search_images(
        index, loaded, expand_images(queries), top_k, nprobe, min_score, query_pid, batch_size, workers
    )
    if montage is not None:
        draw_montage(results, montage, index.header.input_size)
    if json_output:
        typer.echo(results_json(results))
    else:
        print_results(results)


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
