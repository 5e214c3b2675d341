"""k-reciprocal re-ranking (issue 24): reidx's sparse implementation against the dense reference.

(a) Batch re-ranking, queries and gallery in one graph (a sixth of the items are queries), on synthetic
    clustered L2-normalised embeddings (about 10 images per identity): the dense reference
    (``reidx.retrieval.rerank.reference``, the published code's steps with (items x items) arrays; values
    in float64, or in float32 as published where float64 would not fit; similarities and ranking in
    float64) against ``reidx.retrieval.rerank.rerank`` with every final distance produced, each in its own
    child process (time and peak RSS), results compared: largest distance difference and the share of
    query rows ranked identically (whole row, and top-10).
    Goal: reidx at or below the reference's time.
(b) reidx alone at larger sizes: batch time and peak RSS (goal at 100k: under 4 GB).
(c) Online: the gallery part of a gallery built once (time, peak RSS), then queries one at a time
    (held-out embeddings of the gallery's identities): the plain exact search (``exact_top_k``) and the
    re-ranked one (``GalleryRerank.query``), interleaved, top-10. Goal: re-ranked within 5x of the plain
    query. Its gallery is (b)'s items at the same size.

``--state DIR`` makes (b) and (c) resumable across sittings (1M items is hours of a 2-core machine): the k-NN
pass keeps its blocks in DIR (as ``embed --rerank-graph`` keeps them in ``.partial``; (c) then reuses (b)'s
pass over the same items) and a ledger records the seconds of every finished block of the pass and of (b)'s
final distances, so a run started again does only what is left and reports the sum over sittings: pass, the
sparse stages (this sitting) and the final distances, and the largest peak RSS of any sitting.

Usage: ``python -m benchmarks.bench_rerank [--quick] [--sizes 2000,10000] [--large 100000]
[--online 100000] [--dim 256] [--state DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from benchmarks.processes import in_child, peak_rss_gb
from reidx.io import atomic_path
from reidx.retrieval.rerank.resume import KnnBlocks

PER_IDENTITY = 10
NOISE = 0.6


def embeddings(n: int, dim: int, seed: int = 0, held_out: int = 0) -> np.ndarray:
    """Clustered unit vectors: about PER_IDENTITY per centre, made in blocks (float32 throughout); then
    ``held_out`` more of the same centres (the first n are the same whatever ``held_out`` is)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // PER_IDENTITY), dim), dtype=np.float32)
    out = np.empty((n + held_out, dim), np.float32)
    for first, last in ((0, n), (n, n + held_out)):
        for start in range(first, last, 65536):
            block = centres[rng.integers(0, len(centres), min(65536, last - start))]
            block += NOISE * rng.standard_normal(block.shape, dtype=np.float32)
            out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


class Ledger:
    """Seconds of the finished blocks of a resumable run (``--state``), kept in one JSON file written
    atomically after every block: ``{part: {first row: seconds}}`` plus the peak RSS of every sitting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def seconds(self, part: str) -> dict[str, float]:
        return self.data.setdefault(part, {})

    def record(self, part: str, first: int, seconds: float) -> None:
        self.seconds(part)[str(first)] = seconds
        self.save()

    def peak(self, gb: float) -> float:
        """The largest peak RSS of any sitting, this one's ``gb`` included."""
        self.data["peak_gb"] = max(gb, self.data.get("peak_gb", 0.0))
        self.save()
        return self.data["peak_gb"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data))


class TimedBlocks(KnnBlocks):
    """The k-NN pass's kept blocks (:class:`KnnBlocks`, under ``directory/knn``), each searched block's
    seconds in the pass's own ledger (``directory/pass-ID.json``), whichever stage searched it."""

    def __init__(self, directory: Path, gallery: np.ndarray, queries: np.ndarray, k: int) -> None:
        super().__init__(directory / "knn", gallery, queries, k)
        self.ledger = Ledger(directory / f"pass-{self.pass_id}.json")
        self.searched_s, self.started = 0.0, time.perf_counter()

    def load(self, first: int, count: int):
        found = super().load(first, count)
        self.started = time.perf_counter()
        return found

    def save(self, first: int, found) -> None:
        seconds = time.perf_counter() - self.started
        super().save(first, found)
        self.searched_s += seconds
        self.ledger.record("blocks", first, seconds)


class Resumable:
    """``--state``: the k-NN passes of one stage keep their blocks and seconds in ``directory`` (called as
    the ``passes`` factory); ``ledger`` holds the stage's other seconds and its peak RSS."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.ledger, self.passes = directory, Ledger(directory / f"{name}.json"), []

    def __call__(self, gallery: np.ndarray, queries: np.ndarray, k: int) -> TimedBlocks:
        blocks = TimedBlocks(self.directory, gallery, queries, k)
        self.passes.append(blocks)
        return blocks

    def over_sittings(self, wall_s: float) -> float:
        """A graph build's seconds over sittings: this sitting's wall time with its searched blocks replaced
        by every block's recorded seconds (kept blocks were searched in an earlier sitting or stage)."""
        searched_now = sum(p.searched_s for p in self.passes)
        return wall_s - searched_now + sum(sum(p.ledger.seconds("blocks").values()) for p in self.passes)


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def batch_reference(n: int, dim: int, dtype: str, save: str) -> dict[str, Any]:
    from reidx.retrieval.rerank.reference import rerank_dense

    items = embeddings(n, dim)
    start = time.perf_counter()
    final = rerank_dense(items, n // 6, blas=True, dtype=np.dtype(dtype).type)
    seconds = time.perf_counter() - start
    np.save(save, final)
    return {"s": seconds, "peak_gb": peak_rss_gb()}


def batch_reidx(n: int, dim: int, save: str | None, state: str | None = None) -> dict[str, Any]:
    """(b): re-rank a sixth of ``n`` items against the rest and produce every final distance (into ``save``
    when given); resumable with ``state``, its seconds then summed over sittings."""
    from reidx.retrieval.rerank import rerank
    from reidx.retrieval.rerank.batch import BLOCK_DISTANCES

    items = embeddings(n, dim)
    queries = n // 6
    run = Resumable(Path(state), f"batch-{n}-{dim}") if state else None
    before = peak_rss_gb()
    start = time.perf_counter()
    reranked = rerank(items[:queries], items[queries:], passes=run)
    graph_s = time.perf_counter() - start
    out = np.lib.format.open_memmap(save, "w+", np.float64, (queries, n - queries)) if save else None
    done = run.ledger.seconds("rows") if run else {}
    step = max(1, BLOCK_DISTANCES // (n - queries))
    for first in (f for f in range(0, queries, step) if str(f) not in done):
        started = time.perf_counter()
        rows = reranked.rows(first, first + step)
        if out is not None:
            out[first : first + len(rows)] = rows
        if run is not None:
            run.ledger.record("rows", first, time.perf_counter() - started)
    seconds = time.perf_counter() - start
    if out is not None:
        out.flush()
    figures = {"s": seconds, "graph_s": graph_s, "peak_gb": peak_rss_gb(), "before_gb": before}
    if run is not None:  # over sittings: every pass block, this sitting's sparse stages, every distance block
        figures["graph_s"] = run.over_sittings(graph_s)
        figures["s"] = figures["graph_s"] + sum(run.ledger.seconds("rows").values())
        figures["peak_gb"] = run.ledger.peak(figures["peak_gb"])
    return figures


def online(n: int, dim: int, queries: int, state: str | None = None) -> dict[str, Any]:
    """(c): the gallery part of (b)'s ``n`` items, then ``queries`` held-out ones one at a time; with ``state``
    the k-NN pass resumes (or is (b)'s, kept there) and its seconds are summed over sittings."""
    from reidx.gallery.faiss.exact import exact_top_k
    from reidx.retrieval.rerank import GalleryRerank

    items = embeddings(n, dim, held_out=queries)
    gallery_vectors, probes = items[:n], items[n:]
    run = Resumable(Path(state), f"online-{n}-{dim}") if state else None
    start = time.perf_counter()
    gallery = GalleryRerank.build(gallery_vectors, passes=run)
    build_s = time.perf_counter() - start
    build_peak = peak_rss_gb()
    if run is not None:
        build_s, build_peak = run.over_sittings(build_s), run.ledger.peak(build_peak)
    plain, reranked = [], []
    for q in probes[:3]:  # warm-up
        exact_top_k(gallery_vectors, q[None], 10), gallery.query(q, 10)
    for q in probes:
        t = time.perf_counter()
        exact_top_k(gallery_vectors, q[None], 10)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        gallery.query(q, 10)
        reranked.append(time.perf_counter() - t)
    p50, r50 = float(np.median(plain)), float(np.median(reranked))
    return {
        "build_s": build_s,
        "build_peak_gb": build_peak,
        "plain_ms": 1e3 * p50,
        "rerank_ms": 1e3 * r50,
        "rerank_p95_ms": 1e3 * float(np.percentile(reranked, 95)),
        "ratio": r50 / p50,
    }


def compare(size: int, dim: int, scratch: Path) -> dict[str, Any]:
    """(a) at one size: the dense reference and reidx, each in a child, then their results."""
    # bytes a cell at the peak: the int32 ranking beside three arrays of values (float64 similarities first)
    dtype = "float64" if 28 * size * size / 1e9 < 0.6 * available_gb() else "float32"
    if 16 * size * size / 1e9 > 0.6 * available_gb():
        print(f"    {size:,}: skipped, the dense reference would not fit ({available_gb():.1f} GB available)")
        return {}
    ref = in_child(batch_reference, size, dim, dtype, str(scratch / "ref.npy"))
    ours = in_child(batch_reidx, size, dim, str(scratch / "ours.npy"))
    a, b = np.load(scratch / "ref.npy", mmap_mode="r"), np.load(scratch / "ours.npy", mmap_mode="r")
    diff, same, top = 0.0, 0, 0
    for start in range(0, len(a), 256):
        x, y = np.asarray(a[start : start + 256], np.float64), np.asarray(b[start : start + 256])
        diff = max(diff, float(np.abs(x - y).max()))
        order_x, order_y = np.argsort(x, 1, kind="stable"), np.argsort(y, 1, kind="stable")
        same += int((order_x == order_y).all(1).sum())
        top += int((order_x[:, :10] == order_y[:, :10]).all(1).sum())
    figures = {
        f"a{size}_reference_s": ref["s"],
        f"a{size}_reference_peak_gb": ref["peak_gb"],
        f"a{size}_reidx_s": ours["s"],
        f"a{size}_reidx_peak_gb": ours["peak_gb"],
        f"a{size}_ratio": ours["s"] / ref["s"],
        f"a{size}_max_diff": diff,
        f"a{size}_rows_identical": same / len(a),
        f"a{size}_top10_identical": top / len(a),
    }
    print(
        f"    {size:>9,}  reference ({dtype}) {ref['s']:8.1f} s {ref['peak_gb']:6.2f} GB | reidx {ours['s']:8.1f} s"
        f" {ours['peak_gb']:6.2f} GB | reidx/reference {ours['s'] / ref['s']:5.2f} | max diff {diff:.1e},"
        f" rows ranked identically {100 * same / len(a):.2f}% (top-10 {100 * top / len(a):.2f}%)",
        flush=True,
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 for (a), no (b), a 20,000 gallery for (c)")
    parser.add_argument("--sizes", help="comma-separated item counts for (a); default 2000,10000,20000")
    parser.add_argument("--large", help="comma-separated item counts for (b); default 100000")
    parser.add_argument("--online", help="comma-separated gallery sizes for (c); default 100000")
    parser.add_argument("--queries", type=int, default=100, help="online queries (c)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--state", help="folder that makes (b) and (c) resumable across sittings (see above)")
    args = parser.parse_args(argv)

    def sizes(text: str | None, default: str) -> list[int]:
        return [int(s) for s in (text if text is not None else default).split(",") if s]

    figures: dict[str, float] = {}
    print(f"(a) batch, dense reference vs reidx, {args.dim}-d, a sixth of the items are queries", flush=True)
    with TemporaryDirectory() as scratch:
        for size in sizes(args.sizes, "2000" if args.quick else "2000,10000,20000"):
            figures |= compare(size, args.dim, Path(scratch))
    print("(b) batch, reidx alone", flush=True)
    for size in sizes(args.large, "" if args.quick else "100000"):
        ours = in_child(batch_reidx, size, args.dim, None, args.state)
        figures |= {f"b{size}_s": ours["s"], f"b{size}_graph_s": ours["graph_s"], f"b{size}_peak_gb": ours["peak_gb"]}
        print(
            f"    {size:>9,}  {ours['s']:8.1f} s (graph {ours['graph_s']:.1f} s)  peak {ours['peak_gb']:.2f} GB"
            f" (goal at 100k < 4 GB; {ours['before_gb']:.2f} GB before)",
            flush=True,
        )
    print(f"(c) online, {args.queries} queries one at a time, top-10", flush=True)
    for size in sizes(args.online, "20000" if args.quick else "100000"):
        found = in_child(online, size, args.dim, args.queries, args.state)
        figures |= {f"c{size}_{key}": value for key, value in found.items()}
        print(
            f"    {size:>9,}  gallery part {found['build_s']:.1f} s, peak {found['build_peak_gb']:.2f} GB | plain"
            f" {found['plain_ms']:.2f} ms, re-ranked {found['rerank_ms']:.2f} ms (p95 {found['rerank_p95_ms']:.2f})"
            f" | ratio {found['ratio']:.2f} (goal <= 5)",
            flush=True,
        )
    return figures


if __name__ == "__main__":
    main()
