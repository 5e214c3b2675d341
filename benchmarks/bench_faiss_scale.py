"""IVF-PQ beyond memory on this machine: an N x 256-d gallery (default 10M) built with reidx's on-disk
inverted lists, against exact search, in one run.

The gallery is generated deterministically in chunks (re-ID-like clustered Gaussians, as in
bench_retrieval (b)), never held whole: the quantizers are trained on a 256k sample from the same
distribution, the vectors go into in-memory shards merged into one lists file (:mod:`reidx.gallery.faiss.ondisk`),
and the exact top 10 of the sampled queries comes from :func:`reidx.gallery.faiss.exact.exact_top_k` over the
same chunks, regenerated. Printed: build time, ms/query at a few nprobe values, recall@10 (the exact nearest
neighbour is in the top 10), 10-recall@10 (share of the exact top 10 found), peak RSS, the lists' size.
Usage: ``nice -n 10 python -m benchmarks.bench_faiss_scale [--count 10000000] [--nlist 4096]``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from benchmarks.bench_retrieval import embedding_like
from reidx.gallery.faiss.exact import exact_top_k
from reidx.gallery.faiss.index import INDEX_NAME, LISTS_NAME, new_faiss_index, set_nprobe
from reidx.gallery.faiss.ondisk import write_on_disk
from reidx.gallery.layout import ivfpq_params
from reidx.gallery.ranking import ranked, top_k

K = 10
DIM = 256
CHUNK = 500_000
TRAINING = 256 * 1024


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def chunks(count: int, model: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
    """The gallery, chunk by chunk, the same on every pass (each chunk seeded by its number)."""
    for number, start in enumerate(range(0, count, CHUNK)):
        yield embedding_like(min(CHUNK, count - start), model, np.random.default_rng([7, number]))


def exact_truth(count: int, model: dict[str, np.ndarray], queries: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds spent scoring (generation excluded) and the exact top-K ids over the streamed gallery."""
    scores, ids, seconds = [], [], 0.0
    for number, chunk in enumerate(chunks(count, model)):
        start = time.perf_counter()
        found_scores, found_ids = exact_top_k(chunk, queries, K)
        seconds += time.perf_counter() - start
        scores.append(found_scores)
        ids.append(found_ids + number * CHUNK)
    merged_scores, merged_ids = ranked(np.concatenate(scores, 1), np.concatenate(ids, 1))
    return seconds, merged_ids[:, :K]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Build, search and score; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000_000, help="gallery vectors")
    parser.add_argument("--nlist", type=int, default=4096, help="inverted lists")
    parser.add_argument("--queries", type=int, default=1000, help="sampled queries scored against exact search")
    parser.add_argument("--folder", type=Path, default=None, help="where the index is built (a temporary folder)")
    args = parser.parse_args(argv)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {args.count:,} x {DIM}-d", flush=True)
    rng = np.random.default_rng(1)
    model = {
        "centres": rng.standard_normal((20_000, 32), dtype=np.float32),
        "projection": rng.standard_normal((32, DIM), dtype=np.float32),
    }
    queries = embedding_like(args.queries, model, np.random.default_rng(8))
    params = ivfpq_params(DIM, args.nlist)
    folder = Path(tempfile.mkdtemp(prefix="reidx-scale-", dir=args.folder))
    try:
        start = time.perf_counter()
        index = new_faiss_index(DIM, "ivfpq", params)
        index.train(embedding_like(TRAINING, model, np.random.default_rng(9)))
        trained_s = time.perf_counter() - start
        print(f"trained on {TRAINING:,} in {trained_s:.0f} s; rss {peak_rss_gb():.2f} GB", flush=True)
        added = write_on_disk(index, chunks(args.count, model), folder / INDEX_NAME, folder / LISTS_NAME)
        build_s = time.perf_counter() - start
        lists_gb = (folder / LISTS_NAME).stat().st_size / 1e9
        print(f"built {added:,} in {build_s:.0f} s (lists {lists_gb:.2f} GB); rss {peak_rss_gb():.2f} GB", flush=True)
        del index
        exact_s, truth = exact_truth(args.count, model, queries)
        print(f"exact: {1000 * exact_s / len(queries):.1f} ms/query; rss {peak_rss_gb():.2f} GB", flush=True)
        searched = faiss.read_index(str(folder / INDEX_NAME), faiss.IO_FLAG_ONDISK_SAME_DIR)
        figures = {
            "count": float(args.count),
            "nlist": float(args.nlist),
            "pq_m": float(params["pq_m"]),
            "build_s": build_s,
            "train_s": trained_s,
            "lists_gb": lists_gb,
            "exact_ms_per_query": 1000 * exact_s / len(queries),
        }
        for nprobe in (16, 32, 64, 128):
            set_nprobe(searched, nprobe, False)
            top_k(searched.search, queries[:50], K, added)  # page the lists in
            start = time.perf_counter()
            _, found = top_k(searched.search, queries, K, added)
            ms = 1000 * (time.perf_counter() - start) / len(queries)
            recall = float(np.mean([truth[q, 0] in found[q] for q in range(len(queries))]))
            overlap = float(np.mean([len(set(truth[q]) & set(found[q])) / K for q in range(len(queries))]))
            print(
                f"nprobe {nprobe:3d}: {ms:.2f} ms/query, recall@10 {recall:.3f}, 10-recall@10 {overlap:.3f}",
                flush=True,
            )
            figures |= {
                f"nprobe{nprobe}_ms": ms,
                f"nprobe{nprobe}_recall10": recall,
                f"nprobe{nprobe}_10recall10": overlap,
            }
        figures["peak_rss_gb"] = peak_rss_gb()
        print(f"peak rss {figures['peak_rss_gb']:.2f} GB", flush=True)
        return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
