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
    (embeddings of held-out items): the plain exact search (``exact_top_k``) and the re-ranked one
    (``GalleryRerank.query``), interleaved, top-10. Goal: re-ranked within 5x of the plain query.

Usage: ``python -m benchmarks.bench_rerank [--quick] [--sizes 2000,10000] [--large 100000]
[--online 100000] [--dim 256]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from benchmarks.processes import in_child, peak_rss_gb

PER_IDENTITY = 10
NOISE = 0.6


def embeddings(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors: about PER_IDENTITY per centre, made in blocks (float32 throughout)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // PER_IDENTITY), dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        block = centres[rng.integers(0, len(centres), min(65536, n - start))]
        block += NOISE * rng.standard_normal(block.shape, dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


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


def batch_reidx(n: int, dim: int, save: str | None) -> dict[str, Any]:
    from reidx.retrieval.rerank import rerank

    items = embeddings(n, dim)
    queries = n // 6
    before = peak_rss_gb()
    start = time.perf_counter()
    reranked = rerank(items[:queries], items[queries:])
    graph_s = time.perf_counter() - start
    out = np.lib.format.open_memmap(save, "w+", np.float64, (queries, n - queries)) if save else None
    for first, rows in reranked.blocks():
        if out is not None:
            out[first : first + len(rows)] = rows
    seconds = time.perf_counter() - start
    if out is not None:
        out.flush()
    return {"s": seconds, "graph_s": graph_s, "peak_gb": peak_rss_gb(), "before_gb": before}


def online(n: int, dim: int, queries: int) -> dict[str, Any]:
    from reidx.gallery.faiss.exact import exact_top_k
    from reidx.retrieval.rerank import GalleryRerank

    items = embeddings(n + queries, dim)
    probes, gallery_vectors = items[:queries], items[queries:]
    start = time.perf_counter()
    gallery = GalleryRerank.build(gallery_vectors)
    build_s = time.perf_counter() - start
    build_peak = peak_rss_gb()
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
        ours = in_child(batch_reidx, size, args.dim, None)
        figures |= {f"b{size}_s": ours["s"], f"b{size}_graph_s": ours["graph_s"], f"b{size}_peak_gb": ours["peak_gb"]}
        print(
            f"    {size:>9,}  {ours['s']:8.1f} s (graph {ours['graph_s']:.1f} s)  peak {ours['peak_gb']:.2f} GB"
            f" (goal at 100k < 4 GB; {ours['before_gb']:.2f} GB before)",
            flush=True,
        )
    print(f"(c) online, {args.queries} queries one at a time, top-10", flush=True)
    for size in sizes(args.online, "20000" if args.quick else "100000"):
        found = in_child(online, size, args.dim, args.queries)
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
