"""``reidx serve`` warm query latency vs ``reidx search`` cold start, on the demo index and a 100k-entry index.

For each gallery, in one run:

* cold: ``python -m reidx search CROP --gallery IDX --json`` as a fresh process (``--cold`` runs): wall s;
* warm: ``reidx serve`` started once as a process, then ``--requests`` sequential ``POST /search`` of one crop
  each over real HTTP on localhost: wall ms per request;
* the parts, in this process: the model forward alone (one prepared crop through ``embed``) and the index
  search alone (``FaissGallery.search`` of its vector), median ms. Goal: warm p50 <= 1.5 x (forward + search).

The 100k index is synthetic: the demo index's header (model, checkpoint fingerprint, mode) with 100,000 unit
vectors (the demo gallery's embeddings, tiled, plus noise) and its metadata rows cycled, so the model and the
search cost are real and the hits are not meaningful. Without ``--index`` the demo's ``demo/index`` is used
(built by ``make demo``); when it is missing, a ``scripts/demo.py --quick`` demo is built in a temporary folder.
Usage: ``python -m benchmarks.bench_serve [--index demo/index] [--quick]``.
"""

from __future__ import annotations

import os

# as the CLI does: torch's and FAISS's OpenMP runtimes in one process must wait passively
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from reidx.data.transforms import to_model_input  # noqa: E402
from reidx.device import Devices  # noqa: E402
from reidx.gallery import IndexHeader, open_gallery_dir  # noqa: E402
from reidx.gallery.directory import write_directory  # noqa: E402
from reidx.gallery.faiss.calls import write_faiss  # noqa: E402
from reidx.gallery.faiss.index import INDEX_NAME, new_faiss_index  # noqa: E402
from reidx.images import load_image  # noqa: E402
from reidx.retrieval.search import open_gallery  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
BIG = 100_000


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return float(p50), float(p95)


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls (after one untimed warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def cold_search(index: Path, crop: Path, runs: int) -> list[float]:
    """Wall seconds of fresh ``reidx search --json`` processes (torch import, checkpoint, index, one query)."""
    command = [sys.executable, "-m", "reidx", "search", str(crop), "--gallery", str(index), "--json", "--top-k"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*command, str(K), "--workers", "0"], check=True, capture_output=True, env=environment())
        times.append(time.perf_counter() - start)
    return times


def warm_serve(index: Path, crops: list[Path], requests: int) -> list[float]:
    """Wall seconds of sequential one-crop ``POST /search`` requests to one ``reidx serve`` process."""
    command = [sys.executable, "-m", "reidx", "serve", "--gallery", str(index), "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        line = server.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if not found:
            raise RuntimeError(f"reidx serve did not start: {line}{server.stderr.read()[-2000:]}")
        with httpx.Client(base_url=found[0], timeout=120) as client:
            bodies = [crop.read_bytes() for crop in crops]

            def ask(i: int) -> None:
                files = [("images", (crops[i % len(crops)].name, bodies[i % len(crops)], "image/png"))]
                answer = client.post("/search", files=files, data={"top_k": str(K)})
                answer.raise_for_status()

            ask(0)
            times = []
            for i in range(requests):
                start = time.perf_counter()
                ask(i)
                times.append(time.perf_counter() - start)
        return times
    finally:
        server.terminate()
        server.wait(timeout=60)


def parts(index: Path, crops: list[Path], repeats: int) -> tuple[list[float], list[float]]:
    """Wall seconds of the model forward alone and of the index search alone, one crop at a time."""
    gallery, embedder = open_gallery(index, devices=Devices("auto"))  # the index's checkpoint, in torch
    inputs = [to_model_input(load_image(crop), embedder.input_size)[None] for crop in crops]
    vectors = [embedder.embed_batch(batch) for batch in inputs]
    forward = timed(lambda: embedder.embed_batch(inputs[0]), repeats)
    search = timed(lambda: gallery.search(vectors[0], K), repeats)
    return forward, search


def synthetic_index(demo: Path, out: Path, count: int) -> Path:
    """``count`` vectors (the demo's, tiled, plus noise) under the demo's header and metadata rows."""
    gallery = open_gallery_dir(demo, Devices("cpu"))
    base = gallery.index.reconstruct_n(0, len(gallery))
    rng = np.random.default_rng(0)
    rows = np.arange(count) % len(gallery)
    vectors = base[rows] + 0.05 * rng.standard_normal((count, base.shape[1]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = new_faiss_index(base.shape[1], "flat", {})
    index.add(vectors)
    header = gallery.header
    big = IndexHeader(header.fingerprint, header.checkpoint, header.model, header.dim, count)
    metadata = gallery.metadata.iloc[rows].reset_index(drop=True)
    write_directory(out, big, metadata, vectors=lambda tmp: write_faiss(index, tmp / INDEX_NAME))
    return out


def query_crops(index: Path, count: int) -> list[Path]:
    """Low-resolution query crops of the demo dataset beside the index, else the gallery's own images."""
    found = sorted((index.parent / "data" / "lr").rglob("*.png"))
    if not found:
        found = [Path(path) for path in open_gallery_dir(index, Devices("cpu")).metadata["path"]]
    return found[:count]


def demo_index(scratch: Path) -> Path:
    """``demo/index``, or a quick demo's index built in ``scratch``."""
    if (ROOT / "demo" / "index" / "header.json").is_file():
        return ROOT / "demo" / "index"
    sys.path.insert(0, str(ROOT / "scripts"))
    import demo

    demo.run(scratch / "demo", demo.QUICK)
    return scratch / "demo" / "index"


def measure(name: str, index: Path, crops: list[Path], args: argparse.Namespace) -> dict[str, float]:
    cold = percentiles(cold_search(index, crops[0], args.cold))
    warm = percentiles(warm_serve(index, crops, args.requests))
    forward, search = (percentiles(times)[0] for times in parts(index, crops, args.requests))
    ratio = warm[0] / (forward + search)
    entries = open_gallery_dir(index, Devices("cpu")).header.count
    print(
        f"| {name} | {entries:,} | {cold[0] / 1000:.2f} / {cold[1] / 1000:.2f} s | {warm[0]:.1f} / {warm[1]:.1f} ms "
        f"| {forward:.1f} ms | {search:.2f} ms | {ratio:.2f} | {cold[0] / warm[0]:,.0f}x |",
        flush=True,
    )
    return {
        f"{name}_cold_p50_s": cold[0] / 1000,
        f"{name}_cold_p95_s": cold[1] / 1000,
        f"{name}_warm_p50_ms": warm[0],
        f"{name}_warm_p95_ms": warm[1],
        f"{name}_forward_ms": forward,
        f"{name}_search_ms": search,
        f"{name}_warm_over_parts": ratio,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, default=None, help="demo index (default: demo/index)")
    parser.add_argument("--quick", action="store_true", help="fewer runs and a 20k synthetic index")
    parser.add_argument("--cold", type=int, default=None, help="cold reidx search runs per gallery (default 5)")
    parser.add_argument("--requests", type=int, default=None, help="warm requests per gallery (default 100)")
    args = parser.parse_args(argv)
    args.cold = args.cold or (2 if args.quick else 5)
    args.requests = args.requests or (20 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        index = args.index or demo_index(Path(scratch))
        crops = query_crops(index, 20)
        big = synthetic_index(index, Path(scratch) / "big", 20_000 if args.quick else BIG)
        print(
            "| gallery | entries | cold `reidx search` p50 / p95 | warm `serve` p50 / p95 | model forward | "
            "index search | warm / (forward + search) | cold / warm |\n|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        figures = measure("demo", index, crops, args)
        figures |= measure("synthetic", big, crops, args)
    return figures


if __name__ == "__main__":
    main()
