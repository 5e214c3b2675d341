"""Speed and memory of the evaluation core (issue 3 goals).

(a) Multi-shot evaluation from a Market-sized distance matrix (3,368 queries x 19,732 gallery, 750 ids,
    6 cameras, random distances): ``reidx.metrics.evaluate`` against the per-query reference
    (``reidx.metrics.reference``: torchreid's algorithm with a stable sort), timed in the same run, results
    checked equal.
    Goal: under 2 s and at least 10x faster than the reference.
(b) ``evaluate_embeddings`` on L2-normalised 2,048-d random embeddings, 100k queries x 100k gallery, in
    query chunks, run in a child process so its peak resident memory (ru_maxrss) is its own.
    Goal: peak under 4 GB (the two embedding matrices alone take 1.6 GB).

Usage: ``python benchmarks/bench_metrics.py [--quick] [--size N] [--dim D] [--skip-embeddings]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.processes import in_child, peak_rss_gb
from reidx.metrics import evaluate, evaluate_embeddings
from reidx.metrics.reference import multi_shot_reference

MARKET_QUERIES, MARKET_GALLERY, MARKET_IDS, CAMERAS = 3_368, 19_732, 750, 6


def labels(rng: np.random.Generator, n: int, ids: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(1, ids + 1, n), rng.integers(0, CAMERAS, n)


def bench_distance_matrix(queries: int, gallery: int, ids: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    dist = rng.random((queries, gallery), dtype=np.float32)
    (q_pids, q_cams), (g_pids, g_cams) = labels(rng, queries, ids), labels(rng, gallery, ids)
    evaluate(dist[:64], q_pids[:64], g_pids, q_cams[:64], g_cams)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    ours = evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    cmc, m_ap, _ = multi_shot_reference(dist, q_pids, g_pids, q_cams, g_cams)
    loop_s, loop_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert np.allclose(ours.cmc, cmc, atol=1e-9) and abs(ours.mAP - m_ap) < 1e-9, "results differ"
    return {
        "evaluate_s": ours_s,
        "loop_s": loop_s,
        "speedup": loop_s / ours_s,
        "evaluate_cpu_s": ours_cpu,
        "loop_cpu_s": loop_cpu,
    }


def bench_embeddings(size: int, dim: int) -> dict[str, float]:
    """Figures of (b); run by :func:`in_child`, so its peak RSS is its own."""
    gen = torch.Generator().manual_seed(0)
    q, g = (torch.randn(size, dim, generator=gen) for _ in range(2))
    for x in (q, g):
        x.div_(x.norm(dim=1, keepdim=True))  # in place: the inputs take 2 x size x dim x 4 bytes, no more
    rng = np.random.default_rng(1)
    ids = max(1, size // 20)
    (q_pids, q_cams), (g_pids, g_cams) = labels(rng, size, ids), labels(rng, size, ids)
    before = peak_rss_gb()
    start = time.perf_counter()
    metrics = evaluate_embeddings(q, g, q_pids, g_pids, q_cams, g_cams)
    return {
        "embed_s": time.perf_counter() - start,
        "embed_peak_gb": peak_rss_gb(),
        "embed_before_gb": before,
        "embed_inputs_gb": 2 * size * dim * 4 / 1e9,
        "embed_map": metrics.mAP,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run both benchmarks, print a table and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (1,000 x 5,000; 5k x 5k x 256-d)")
    parser.add_argument("--size", type=int, help="queries = gallery size for (b); default 100,000")
    parser.add_argument("--dim", type=int, help="embedding dimension for (b); default 2,048")
    parser.add_argument("--skip-embeddings", action="store_true", help="run (a) only")
    args = parser.parse_args(argv)
    shape = (1_000, 5_000, 250) if args.quick else (MARKET_QUERIES, MARKET_GALLERY, MARKET_IDS)
    size = args.size or (5_000 if args.quick else 100_000)
    dim = args.dim or (256 if args.quick else 2_048)

    figures = bench_distance_matrix(*shape)
    print(f"(a) {shape[0]:,} x {shape[1]:,} distance matrix, {torch.get_num_threads()} threads")
    ours, loop = figures["evaluate_cpu_s"], figures["loop_cpu_s"]
    print(f"    evaluate        {figures['evaluate_s']:8.2f} s   (goal < 2 s; CPU time {ours:.2f} s)")
    print(f"    reference       {figures['loop_s']:8.2f} s   (per-query loop; CPU time {loop:.2f} s)")
    print(f"    speed-up        {figures['speedup']:8.1f} x   (goal >= 10x)")
    if not args.skip_embeddings:
        figures |= in_child(bench_embeddings, size, dim)
        print(f"(b) {size:,} x {size:,} x {dim}-d embeddings")
        print(f"    evaluate_embeddings {figures['embed_s']:8.1f} s")
        peak, before, inputs = figures["embed_peak_gb"], figures["embed_before_gb"], figures["embed_inputs_gb"]
        print(
            f"    peak memory         {peak:8.2f} GB  (goal < 4 GB; before evaluating {before:.2f} GB,"
            f" of which the embeddings {inputs:.2f} GB)"
        )
    return figures


if __name__ == "__main__":
    main()
