"""The ``reidx`` command line: parses options and delegates to the library. No logic lives here."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import fields

# torch and FAISS each bundle an OpenMP runtime; passive waiting stops their idle threads starving each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from reidx import __version__
from reidx.cli_options import (
    MODEL_OPTIONS,
    OUT_DIR,
    OUT_FILE,
    TrainCommand,
    lazy_choice,
    request_from,
    train_overrides,
    with_request_options,
    with_train_options,
)
from reidx.console import err_console, stdout_error
from reidx.data.base import Options as ReaderOptions
from reidx.device import DEVICE_CHOICES, Devices
from reidx.errors import ReidxError
from reidx.gallery import BACKENDS, DEFAULT_BACKEND, IndexSpec, StoreRequest
from reidx.gallery.base import backend_options
from reidx.options import finite_number
from reidx.retrieval.requests import EmbedJob, SearchRequest
from reidx.service.server import ServeOptions


def _dataset_names() -> list[str]:
    from reidx.data.registry import dataset_names

    return dataset_names()


#: ``prepare --dataset``: the dataset registry's names, read only for ``reidx prepare --help`` or a run.
DatasetName = lazy_choice("DatasetName", _dataset_names)

app = typer.Typer(
    name="reidx",
    help=(
        "Cross-resolution person re-identification (CAD-Net): prepare, train, recover, embed, search, serve, "
        "export, report."
    ),
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
    ctx.obj = Devices(device)


@app.command()
@with_request_options(ReaderOptions)
def prepare(
    dataset: Annotated[DatasetName, typer.Option(help="The dataset's reader (folder: a CSV of images).")],
    out: Annotated[Path, typer.Option(help="Output dataset directory.", metavar=OUT_DIR)],
    root: Annotated[Path | None, typer.Option(help="Dataset folder (a CSV file for `folder`).")] = None,
    downsample: Annotated[str, typer.Option(help="Seen rates r (integers >= 2), comma-separated.")] = "2,3,4",
    unseen: Annotated[str, typer.Option(help="Extra query sets, every query at this rate, e.g. 8.")] = "",
    seed: Annotated[int, typer.Option(help="Seed of every random choice (splits, rates, images).")] = 0,
    trials: Annotated[int | None, typer.Option(help="Random splits (default: the protocol's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a dataset reidx prepared.")] = False,
    workers: Annotated[int | None, typer.Option(help="Image threads (default: CPUs, at most 8).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    **reader_options: Any,
) -> None:
    """Build an MLR (multi-low-resolution) dataset: LR queries, HR gallery, manifest (see data/README.md).

    Examples:

    * `reidx prepare --dataset synthetic --out data/mlr-synth`
    * `reidx prepare --dataset market1501 --root ~/reid/market1501 --unseen 8 --out data/mlr-market`
    * `reidx prepare --dataset viper --root ../shared/data/VIPeR --downsample 2,3,4 --out data/mlr-viper`
    * `reidx prepare --dataset folder --root my_images.csv --downsample 4 --out data/mine --json`
    * `reidx prepare --dataset towncentre --root ../shared/data/TownCentre --frames-per-id 4 --out data/town`
      (3dpes, sarc3d, towncentre: training identities only, no test split)
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
        **reader_options,
    )
    print_summary(info, out, as_json=json_output)


@app.command(cls=TrainCommand)
@with_train_options
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory (new, or an existing one with --resume).", metavar=OUT_DIR)],
    config: Annotated[Path | None, typer.Option(help="TOML file of options (or a run's config.json).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --out from its last.pt.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
    **options: Any,
) -> None:
    """Train CAD-Net (or the baseline) on a prepared dataset; validation uses held-out TRAINING ids.

    Writes RUN/config.json, RUN/log.csv, RUN/last.pt (every epoch), RUN/best.pt (best validation Rank-1)
    and RUN/epoch_N.pt (--save-every). Flags override --config (TOML keys = the flags' names); the flags and
    their defaults come from `reidx/train/config.py` ([L] RAIN code, [G] guess). Multi-GPU / multi-node:
    the same command under `torchrun`.

    Examples:

    * `reidx train --dataset data/mlr-synth --out runs/cadnet --arch resnet18 --epochs 10`
    * `reidx train --dataset data/mlr-viper --out runs/base --model baseline --no-pretrained`
    * `reidx train --dataset data/mlr-synth --out runs/abl --no-adv-image --no-rec --lambda-adv-feature 0.1`
    * `reidx train --dataset data/mlr-viper --dataset data/3dpes --dataset data/town --out runs/more-ids`
    * `reidx train --out runs/cadnet --resume --epochs 20`
    * `torchrun --nproc_per_node 4 -m reidx train --config cadnet.toml --dataset data/mlr-market --out runs/m`
    """
    from reidx.train import print_summary, run_training

    overrides = train_overrides({**options, **ctx.meta[MODEL_OPTIONS]})
    summary = run_training(out, overrides, config_file=config, resume=resume, devices=ctx.obj)
    print_summary(summary, as_json=json_output)


@app.command()
def recover(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="LR images or folders of them.")],
    checkpoint: Annotated[Path, typer.Option(help="CAD-Net checkpoint (.pt) written by `reidx train`.")],
    out: Annotated[
        Path, typer.Option(help="Folder for the recovered PNGs (same stems as the inputs).", metavar=OUT_DIR)
    ],
    hr: Annotated[Path | None, typer.Option(help="Folder of HR ground truth, matched by file stem.")] = None,
    grid: Annotated[
        Path | None, typer.Option(help="PNG of rows LR (bilinear) | recovered | HR.", metavar=OUT_FILE)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model batch.", min=1)] = 32,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.", min=0)] = 2,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Recover HR images from LR crops with a trained CAD-Net (G(E(x)) at the model input size).

    With --hr, prints SSIM / PSNR / LPIPS (n/a with the reason when its weights are absent) per image and
    the mean, for the recovered image and for the bilinear-upsampled input, both against the HR image.

    Examples:

    * `reidx recover data/mlr-synth/lr/ --checkpoint runs/cadnet/best.pt --out recovered/`
    * `reidx recover lr/*.png --checkpoint runs/cadnet/last.pt --out rec/ --hr hr/ --grid grid.png --json`
    """
    must_exist(inputs, "image")
    must_exist([checkpoint], "checkpoint")
    from reidx.recover import print_report, recover_images

    report = recover_images(
        inputs,
        checkpoint,
        out,
        hr=hr,
        grid=grid,
        device=ctx.obj.torch,
        batch_size=batch_size,
        workers=workers,
    )
    print_report(report, as_json=json_output)


def _backend_help() -> str:
    names = [f"{name} (default)" if name == DEFAULT_BACKEND else name for name in BACKENDS.names()]
    return f"Where the vectors go: {' | '.join(names)}."


@app.command()
@with_request_options(IndexSpec, *backend_options(), EmbedJob)
def embed(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Index directory to write (or to --append to).", metavar=OUT_DIR)],
    checkpoint: Annotated[Path | None, typer.Option(help="Model checkpoint (.pt) written by `reidx train`.")] = None,
    model_file: Annotated[Path | None, typer.Option(help="Or an ONNX file from `reidx export` (onnxruntime).")] = None,
    images: Annotated[list[Path] | None, typer.Argument(help="Images or folders (or --dataset).")] = None,
    dataset: Annotated[Path | None, typer.Option(help="A dataset written by `reidx prepare`.")] = None,
    split: Annotated[str, typer.Option(help="--dataset split: train | query | gallery.")] = "gallery",
    trial: Annotated[int | None, typer.Option(help="--dataset trial (needed when it has several).")] = None,
    mode: Annotated[str | None, typer.Option(help="Embedding: fused | f | g (CAD-Net only); default fused.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to the index in --out (new paths).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an index reidx wrote.")] = False,
    backend: Annotated[str | None, typer.Option(help=_backend_help())] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the header and counts as JSON.")] = False,
    **options: Any,
) -> None:
    """Embed gallery images into an index directory (header.json, metadata.parquet and the vectors: index.faiss,
    or with `--backend milvus` a Milvus collection named in backend.json).

    An interrupted run resumes when started again with the same arguments. A Milvus server's token, if it
    needs one, is read from $MILVUS_TOKEN. Under `torchrun` each process embeds a share of the images on its
    own device (cuda:LOCAL_RANK, else CPU) and rank 0 writes the one index; a re-run resumes each share.

    Examples:

    * `reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --out idx/`
    * `reidx embed --checkpoint runs/cadnet/last.pt photos/ cam2/*.jpg --out idx/ --mode g`
    * `reidx embed --checkpoint runs/cadnet/last.pt new_photos/ --out idx/ --append`
    * `reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-market --out idx/ --index ivfpq`
    * `reidx embed --checkpoint runs/cadnet/last.pt photos/ --out idx/ --backend milvus --uri gallery.db`
    * `reidx embed --checkpoint runs/cadnet/last.pt photos/ --out idx/ --backend milvus --uri http://HOST:19530`
    * `torchrun --nproc_per_node 4 -m reidx embed --checkpoint runs/cadnet/last.pt --dataset data/mlr-market --out idx/`
    * `reidx embed --checkpoint runs/cadnet/last.pt city/ --out idx/ --index ivfpq --on-disk --reduce-dim 256`
    * `reidx embed --model-file cadnet.onnx photos/ --out idx/` (the index matches one built from its checkpoint)
    * `reidx embed --checkpoint runs/cadnet/last.pt photos/ --out idx/ --rerank-graph` (for `search --rerank`)
    """
    model = one_model_file(checkpoint, model_file, required=True)
    must_exist(images or [], "image")
    must_exist([dataset] if dataset else [], "dataset")
    from reidx.outputs import check_apart

    check_apart(out, [model, *(images or []), *([dataset] if dataset else [])], inside=False)
    from reidx.distributed import setup, teardown
    from reidx.evaluation.embedders import open_embedder
    from reidx.retrieval import build_index
    from reidx.retrieval.inputs import gallery_table

    spec = request_from(IndexSpec, options)
    store = StoreRequest(backend, {spec.name: options[spec.name] for cls in backend_options() for spec in fields(cls)})
    table = gallery_table(images or [], dataset, split, trial)
    shards = setup(ctx.obj)  # under torchrun: this rank's device and the process group
    try:
        result = build_index(
            open_embedder(model, mode, ctx.obj, shards.device if shards.enabled else None),
            table,
            out,
            spec=spec,
            job=request_from(EmbedJob, options),
            store=store,
            append=append,
            overwrite=overwrite,
            devices=ctx.obj,
            shards=shards,
        )
    finally:
        teardown(shards)
    if result is not None:  # rank 0 (or the only process) reports
        result.show(as_json=json_output)


@app.command()
@with_request_options(SearchRequest, EmbedJob)
def search(
    ctx: typer.Context,
    queries: Annotated[list[Path], typer.Argument(help="Query images or folders, any resolution.")],
    gallery: Annotated[Path, typer.Option(help="Index directory written by `reidx embed`.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the header's model file).")] = None,
    model_file: Annotated[Path | None, typer.Option(help="Or an ONNX file from `reidx export` (onnxruntime).")] = None,
    montage: Annotated[
        Path | None, typer.Option(help="Write a PNG of each query and its top-k.", metavar=OUT_FILE)
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Cosine similarity under which 'not in gallery' (plain scores only: refused with --rerank).",
            parser=finite_number("--min-score"),
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    **options: Any,
) -> None:
    """Search a gallery index with query images (any resolution; embedded exactly like the gallery).

    Scores are cosine similarities (inner products of L2-normalised embeddings), ties in gallery order.
    Filters (`--camera`, `--pid`, `--other-cameras`) give the exact top-k among the entries that pass.
    `--rerank` (an index embedded with `--rerank-graph`) gives the exact k-reciprocal re-ranking of each query
    against the gallery; its scores are re-ranked distances, lower is better (`score_kind` in the JSON).

    Examples:

    * `reidx search query.jpg --gallery idx/ --top-k 10`
    * `reidx search lr_crops/ --gallery idx/ --json --min-score 0.6`
    * `reidx search 0002_c1s1_000451_03.jpg --gallery idx/ --montage hits.png`
    * `reidx search 0002_c1s1_000451_03.jpg --gallery idx/ --other-cameras --camera 2 --camera 3`
    * `reidx search query.jpg --gallery idx/ --model-file cadnet.onnx` (the same checkpoint and mode as the index)
    * `reidx search query.jpg --gallery idx/ --rerank --lambda 0.3` (after `reidx embed ... --rerank-graph`)
    * `reidx search query.jpg --gallery idx/ --query-expansion 2`
    """
    model = one_model_file(checkpoint, model_file, required=False)
    must_exist(queries, "image")
    must_exist([gallery], "index")
    from reidx.console import emit_json
    from reidx.images import expand_images
    from reidx.outputs import check_file_output
    from reidx.retrieval.search import open_gallery, print_results, search_images

    if montage is not None:
        check_file_output(montage, "--montage", "image", [*queries, gallery, *([model] if model else [])])
    paths = expand_images(queries)
    request = request_from(SearchRequest, options)
    opened, embedder = open_gallery(gallery, model, ctx.obj, images=len(paths))
    found = search_images(opened, embedder, paths, request, request_from(EmbedJob, options))
    results = [result.judged(min_score) for result in found]  # the threshold applies where results are shown
    if montage is not None:
        from reidx.retrieval.montage import draw_montage  # torchvision's make_grid: only when a montage is asked

        draw_montage(results, montage, opened.header.input_size)
    if json_output:
        emit_json([result.to_dict() for result in results])
    else:
        print_results(results)


@app.command()
@with_request_options(ServeOptions)
def serve(
    ctx: typer.Context,
    gallery: Annotated[Path, typer.Option(help="Index directory written by `reidx embed`.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: the header's model file).")] = None,
    model_file: Annotated[Path | None, typer.Option(help="Or an ONNX file from `reidx export` (onnxruntime).")] = None,
    min_score: Annotated[
        float | None,
        typer.Option(help="Default score under which 'not in gallery'.", parser=finite_number("--min-score")),
    ] = None,
    **options: Any,
) -> None:
    """Serve searches of a gallery over HTTP, the model and index loaded once: a web page at `/`, the API at
    `POST /search` (uploaded crops, `top_k`, `min_score`, `camera`, `pid`, `other_cameras`; the JSON of
    `reidx search --json`), `GET /gallery/{id}/image` and `GET /health`.

    Gallery images are served only when they are image files inside the folders `reidx embed` recorded in the
    index header (symlinks resolved), or inside the `--image-root` folders the operator names instead; any
    other entry (an edited metadata row) is answered 403.

    It listens on 127.0.0.1 only. It has no TLS and no authentication: to serve others, run it with
    `--host 0.0.0.0 --public` behind a reverse proxy (nginx, Caddy) that adds TLS and authentication, or keep
    it on loopback and let the proxy forward to it.

    Examples:

    * `reidx serve --gallery idx/` then open http://127.0.0.1:8000/
    * `curl -F images=@query.jpg -F top_k=5 http://127.0.0.1:8000/search`
    * `reidx serve --gallery idx/ --min-score 0.6 --port 8080`
    * `reidx serve --gallery idx/ --model-file cadnet.onnx` (onnxruntime; the index's checkpoint and mode)
    * `reidx serve --gallery old-idx/ --image-root photos/` (an index of an older reidx records no folders)
    """
    model = one_model_file(checkpoint, model_file, required=False)
    must_exist([gallery], "index")
    from reidx.service.server import serve as run_server

    run_server(gallery, model, ctx.obj, request_from(ServeOptions, options), min_score)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (.pt) written by `reidx train`.")],
    out: Annotated[Path, typer.Option(help="The ONNX file to write.", metavar=OUT_FILE)],
    mode: Annotated[str, typer.Option(help="Embedding: fused | f | g (CAD-Net only).")] = "fused",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an ONNX file reidx exported.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Export a checkpoint's embedding (pixels in [0, 1] to the L2-normalised vector) as one ONNX graph.

    The graph takes float32 N×3×H×W RGB pixels / 255 at the checkpoint's input size (N dynamic) and gives
    exactly the vectors `reidx embed` makes in that mode; its metadata carries the input size, normalisation,
    mode, model and the checkpoint's SHA-256, so `embed` / `search --model-file` indexes stay comparable with
    the checkpoint's. onnxruntime's output is checked against torch's before the file is written. See
    docs/export.md for TensorRT and OpenVINO.

    Examples:

    * `reidx export --checkpoint runs/cadnet/best.pt --out cadnet.onnx`
    * `reidx export --checkpoint runs/cadnet/best.pt --mode g --out cadnet-g.onnx --overwrite --json`
    """
    must_exist([checkpoint], "checkpoint")
    from reidx.export.onnx import export_onnx

    export_onnx(checkpoint, out, mode, overwrite).show(as_json=json_output)


@app.command()
def report(
    ctx: typer.Context,
    checkpoint: Annotated[
        list[Path],
        typer.Option(help="Checkpoint (.pt), or a folder: every run below it (best.pt); repeat for several."),
    ],
    dataset: Annotated[list[Path], typer.Option(help="Dataset written by `reidx prepare`; repeat for several.")],
    out: Annotated[
        Path | None, typer.Option(help="Report file to write (default: print to stdout).", metavar=OUT_FILE)
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="PNG folder (default: OUT-STEM-plots/ beside --out).", metavar=OUT_DIR)
    ] = None,
    modes: Annotated[str | None, typer.Option(help="Embeddings, e.g. fused,f,g (default: every mode).")] = None,
    published: Annotated[bool, typer.Option("--published", help="Add the paper's Table 1 rows, apart.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="md | csv | json.")] = "md",
    trial: Annotated[str, typer.Option(help="all (mean ± 95% CI) | N (one trial).")] = "all",
    batch_size: Annotated[int, typer.Option(help="Images per model batch.", min=1)] = 64,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.", min=0)] = 2,
    rerank: Annotated[bool, typer.Option("--rerank", help="Add k-reciprocal re-ranked rows (batch form).")] = False,
    k1: Annotated[int, typer.Option("--k1", help="Re-ranking k1 (published: 20).")] = 20,
    k2: Annotated[int, typer.Option("--k2", help="Re-ranking k2 (published: 6).")] = 6,
    lam: Annotated[
        float,
        typer.Option("--lambda", help="Re-ranking λ in [0, 1] (published: 0.3).", parser=finite_number("--lambda")),
    ] = 0.3,
    query_expansion: Annotated[
        int | None, typer.Option(help="Add average query expansion rows over K gallery neighbours.", metavar="K")
    ] = None,
    open_set: Annotated[
        bool, typer.Option("--open-set", help="Add thresholds at 1/5/10% false-match rate and the TMR there.")
    ] = False,
) -> None:
    """Evaluate checkpoints on datasets and write paper-style result tables and plots.

    Any prepared dataset is a test set: a checkpoint is evaluated on its own split of a dataset it trained on,
    on every trial of another; a test set whose identities it trained on, or a training-only dataset, is
    refused. Checkpoints that differ only in their split are one row: mean ± 95% CI over the trials (Student
    t), and every other row's paired per-trial difference against the first row. Results are cached beside
    each checkpoint (`eval-cache/`), keyed by the checkpoint's and the manifest's hashes: a re-run evaluates
    only what changed. Modes a model lacks are skipped and noted.

    Examples:

    * `reidx report --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --out report.md`
    * `reidx report --checkpoint runs/baseline --checkpoint runs/cadnet --dataset data/mlr-viper --published
      --out results/viper.md` (each folder holds one run per split: runs/cadnet/split0/, ...)
    * `reidx report --checkpoint runs/market/best.pt --dataset data/mlr-viper --dataset data/caviar` (cross-dataset)
    * `reidx report --checkpoint runs/cadnet/split0/last.pt --dataset data/mlr-viper --trial 0 --format csv`
    * `reidx report --checkpoint runs/cadnet/last.pt --dataset data/mlr-synth --rerank --query-expansion 3
      --open-set` (re-ranked and AQE rows beside the plain ones, and the open-set thresholds)
    """
    must_exist(checkpoint, "checkpoint")
    must_exist(dataset, "dataset")
    from reidx.report import parse_modes, parse_trial, run_report
    from reidx.report.scoring import rerank_params, scorings

    params = rerank_params(k1, k2, lam)  # checked even without --rerank: a bad value is never ignored silently
    chosen = scorings(params if rerank else None, query_expansion)

    run_report(
        checkpoint,
        dataset,
        out=out,
        plots=plots,
        modes=parse_modes(modes),
        trial=parse_trial(trial),
        fmt=fmt,
        published=published,
        device=ctx.obj.torch,
        batch_size=batch_size,
        workers=workers,
        scorings=chosen,
        open_set=open_set,
    )


#: Each kind of missing path: its line and fix, as the library words them, given here before torch is imported.
MISSING = {
    "image": ("image not found: {}", "check the path"),
    "dataset": ("dataset not found: {}", "pass a directory written by `reidx prepare --out DIR`"),
    "index": ("no index at {}", "build one with `reidx embed --out {}`"),
    "model file": ("model file not found: {}", "pass the .onnx file written by `reidx export`"),
}


def one_model_file(checkpoint: Path | None, model_file: Path | None, required: bool) -> Path | None:
    """The model file of ``--checkpoint`` or ``--model-file`` (not both; one of them when ``required``),
    checked to exist."""
    if checkpoint is not None and model_file is not None:
        raise ReidxError("--checkpoint and --model-file both name a model", "give one of them")
    if required and checkpoint is None and model_file is None:
        raise ReidxError("no model to embed with", "pass --checkpoint RUN/best.pt or --model-file FILE.onnx")
    must_exist([checkpoint] if checkpoint else [], "checkpoint")
    must_exist([model_file] if model_file else [], "model file")
    return checkpoint or model_file


def must_exist(paths: Sequence[Path], kind: str) -> None:
    """A one-line error for the first of ``paths`` that does not exist (``kind``: a key of MISSING, or
    ``checkpoint``)."""
    for path in paths:
        if not path.exists() and kind == "checkpoint":
            from reidx.checkpoint import not_found  # imports no torch

            raise not_found(path)
        if not path.exists():
            message, fix = MISSING[kind]
            raise ReidxError(message.format(path), fix.format(path))


def entry() -> None:
    """The ``reidx`` command (console script, ``python -m reidx``): :func:`main`, then the heap frozen, since the
    process ends here: the interpreter's shutdown then skips walking every object of pandas, pydantic and the rest
    again (about 0.15 of a cold ``--model-file`` query's 1.5 CPU-seconds: benchmarks/bench_coldstart.py). Exit
    handlers (temporary folders, worker pools, servers) still run."""
    try:
        main()
    finally:
        gc.freeze()


def main() -> None:
    """Entry point (in-process too: tests): user-fixable errors become one line on stderr and exit 1."""
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is then one line too
    except ReidxError as exc:
        err_console.print(Text.assemble(("error:", "bold red"), f" {exc.line()}"), highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:
        message = stdout_error(exc)
        if message is None:
            raise
        fix = "let the reader take the whole output, or write it to a file with space left"
        err_console.print(Text.assemble(("error:", "bold red"), f" {message} — {fix}"), highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
