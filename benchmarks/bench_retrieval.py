"""Retrieval speed on this machine, each comparison measured in one run (best of ``--repeats``).

(a) exact search, 1,000 queries against 1k, 20k, 100k (1024-d) and 1M (512-d; ``--quick``: not 1M) gallery
    entries: reidx's CPU exact search (``FaissGallery.search`` on a flat index) vs torch matmul + topk, and
    FAISS's own ``IndexFlatIP`` search for reference; goal: torch time / reidx time >= 1.0 at every size, reidx's
    ids identical to a tie-exact reference ranking. First, at 20k, why FAISS trails: its time by threads.
(b) approximate search, 1M x 256-d vectors with re-ID-like cluster structure: IVF-PQ (nlist 1024,
    64 bytes/vector = reidx's automatic pq_m) trained on a 64k sample; ms/query and recall@10 against
    exact search (recall@10 = share of queries whose exact nearest neighbour is in the top 10).
(c) embedding throughput: the full pipeline (decode 128x64 JPEGs from disk in DataLoader workers +
    model) vs the bare model on pre-decoded tensors, same model (baseline resnet50, 256x128, untrained),
    same batch; goal: pipeline overhead <= 15%.

Vectors are random and L2-normalised; FAISS and torch use the machine's default threads.
Usage: ``python benchmarks/bench_retrieval.py [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from reidx.checkpoint import save_checkpoint
from reidx.data.transforms import to_model_input
from reidx.gallery import BackendRecord, IndexHeader
from reidx.gallery.directory import MetadataColumns
from reidx.gallery.faiss.index import FaissGallery, flat_vectors, new_faiss_index
from reidx.gallery.layout import ivfpq_params
from reidx.gallery.ranking import top_k
from reidx.io import load_image
from reidx.models import build_model
from reidx.models.loading import load_model
from reidx.retrieval import embed_paths

K = 10


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` runs, and the last result."""
    return race(repeats, {"run": run})["run"]


def race(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, object]]:
    """Best wall time and last result of each run, the runs interleaved so that they share the machine's
    load (this box is shared)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(times[name]), results[name]) for name in runs}


def normalised(array: np.ndarray) -> np.ndarray:
    array /= np.linalg.norm(array, axis=1, keepdims=True)
    return array


def random_unit(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return normalised(rng.standard_normal((count, dim), dtype=np.float32))


def embedding_like(count: int, model: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit vectors with re-ID-like structure: identity clusters in a 32-d latent space, projected to the
    full dimension, plus isotropic noise (built in blocks to bound temporary memory)."""
    centres, projection = model["centres"], model["projection"]
    out = np.empty((count, projection.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        size = min(100_000, count - start)
        latent = centres[rng.integers(0, len(centres), size)]
        latent += 0.5 * rng.standard_normal(latent.shape, dtype=np.float32)
        out[start : start + size] = latent @ projection
        out[start : start + size] += 0.25 * rng.standard_normal((size, projection.shape[1]), dtype=np.float32)
    return normalised(out)


def tie_exact_reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the ids of the k best scores with ties by id ascending (np.partition, independent of reidx)."""
    ids = np.empty((len(scores), k), dtype=np.int64)
    for row, values in enumerate(scores):
        threshold = np.partition(values, len(values) - k)[len(values) - k]
        candidates = np.flatnonzero(values >= threshold)
        ids[row] = candidates[np.lexsort((candidates, -values[candidates]))[:k]]
    return ids


def exact_search(gallery_size: int, dim: int, queries: int, repeats: int) -> dict[str, float]:
    """(a) reidx's exact CPU search (FaissGallery.search on a flat index) vs torch matmul + topk vs FAISS's
    own IndexFlatIP search, same vectors; reidx's ids checked against a tie-exact reference ranking."""
    rng = np.random.default_rng(0)
    gallery, query = random_unit(gallery_size, dim, rng), random_unit(queries, dim, rng)
    index = new_faiss_index(dim, "flat", {})
    index.add(gallery)
    del gallery  # the index holds the vectors; torch reads the same memory
    header = IndexHeader({}, "bench", "baseline", dim, gallery_size)
    reidx_index = FaissGallery(Path("bench"), header, MetadataColumns(pa.table({})), BackendRecord(), index)
    gallery_t, query_t = torch.from_numpy(flat_vectors(index)), torch.from_numpy(query)
    timed = race(
        repeats if gallery_size >= 100_000 else 5 * repeats,  # short runs: more tries against the noise
        {
            "reidx": lambda: reidx_index.search(query, K),
            "torch": lambda: torch.topk(query_t @ gallery_t.T, K),
            "faiss": lambda: top_k(index.search, query, K, gallery_size),
        },
    )
    (reidx_s, (_, reidx_ids)), (torch_s, (_, torch_ids)), (faiss_s, (_, faiss_ids)) = (
        timed["reidx"],
        timed["torch"],
        timed["faiss"],
    )
    del timed
    reference = tie_exact_reference((query_t @ gallery_t.T).numpy(), K)
    identical = bool(np.array_equal(reidx_ids, reference))
    print(
        f"(a) exact, {queries} queries x {gallery_size:>9,} x {dim:4d}-d: reidx {reidx_s:6.3f} s, torch matmul+topk "
        f"{torch_s:6.3f} s, FAISS IndexFlatIP (tie-exact top_k) {faiss_s:6.3f} s; torch/reidx {torch_s / reidx_s:.2f}, "
        f"torch/FAISS {torch_s / faiss_s:.2f}; reidx ids identical to the tie-exact reference: {identical} "
        f"(torch.topk ids agree {np.mean(torch_ids.numpy() == reference):.4f}, "
        f"FAISS {np.mean(faiss_ids == reference):.4f})"
    )
    name = f"exact_{gallery_size // 1000}k"
    return {
        f"{name}_reidx_s": reidx_s,
        f"{name}_torch_s": torch_s,
        f"{name}_faiss_s": faiss_s,
        f"{name}_torch_over_reidx": torch_s / reidx_s,
        f"{name}_identical": float(identical),
    }


def faiss_threads(gallery_size: int, dim: int, queries: int, repeats: int) -> dict[str, float]:
    """Why FAISS's exhaustive search trails torch here: its time by OpenMP threads, with and without
    reidx's tie re-fetch (k+1 hits, then :func:`ranked`), against torch's matmul and topk separately."""
    rng = np.random.default_rng(0)
    gallery, query = random_unit(gallery_size, dim, rng), random_unit(queries, dim, rng)
    index = new_faiss_index(dim, "flat", {})
    index.add(gallery)
    gallery_t, query_t = torch.from_numpy(gallery), torch.from_numpy(query)
    threads = faiss.omp_get_max_threads()
    runs: dict[str, Callable[[], object]] = {
        "torch matmul": lambda: query_t @ gallery_t.T,
        "torch matmul+topk": lambda: torch.topk(query_t @ gallery_t.T, K),
    }
    for count in sorted({threads, 1}, reverse=True):
        runs[f"faiss search k={K}, {count} threads"] = lambda count=count: threaded(count, index.search, query, K)
        runs[f"faiss tie-exact top_k, {count} threads"] = lambda count=count: threaded(
            count, top_k, index, query, K, gallery_size
        )
    timed = race(repeats, runs)
    faiss.omp_set_num_threads(threads)
    print(
        f"    why ({queries} x {gallery_size:,} x {dim}-d): "
        + "; ".join(f"{n} {t:.3f} s" for n, (t, _) in timed.items())
    )
    return {f"why_{n.replace(' ', '_')}_s": t for n, (t, _) in timed.items()}


def threaded(count: int, run: Callable[..., object], *args: object) -> object:
    """``run(*args)`` with FAISS's OpenMP limited to ``count`` threads."""
    faiss.omp_set_num_threads(count)
    return run(*args)


def exact_top_k(gallery: np.ndarray, query: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds and ids of an exact IndexFlatIP top-k (the ground truth; the index is freed on return)."""
    index = new_faiss_index(gallery.shape[1], "flat", {})
    index.add(gallery)
    seconds, (_, ids) = best_of(1, lambda: top_k(index.search, query, K, len(gallery)))
    return seconds, ids


def approximate_search(gallery_size: int, dim: int, queries: int, nlist: int, pq_m: int) -> dict[str, float]:
    """(b) IVF-PQ vs exact: build time, ms/query at a few nprobe values, recall@10."""
    rng = np.random.default_rng(1)
    model = {
        "centres": rng.standard_normal((2_000, 32), dtype=np.float32),
        "projection": rng.standard_normal((32, dim), dtype=np.float32),
    }
    gallery, query = embedding_like(gallery_size, model, rng), embedding_like(queries, model, rng)
    exact_s, truth = exact_top_k(gallery, query)
    params = ivfpq_params(dim, nlist, pq_m)
    pq_m = params["pq_m"]
    index = new_faiss_index(dim, "ivfpq", params)
    start = time.perf_counter()
    index.train(gallery[rng.choice(gallery_size, min(gallery_size, 64 * 1024), replace=False)])
    index.add(gallery)
    build_s = time.perf_counter() - start
    print(
        f"(b) ivfpq, {gallery_size:,} x {dim}-d, nlist {nlist}, pq_m {pq_m} ({pq_m} B/vector): built in "
        f"{build_s:.1f} s; exact search {1000 * exact_s / queries:.2f} ms/query"
    )
    figures = {"ivfpq_build_s": build_s, "exact_ms_per_query": 1000 * exact_s / queries}
    for nprobe in (8, 16, 32, 64):
        index.nprobe = nprobe
        seconds, (_, found) = best_of(2, lambda: top_k(index.search, query, K, gallery_size))
        nearest = float(np.mean([truth[q, 0] in found[q] for q in range(queries)]))
        overlap = float(np.mean([len(set(truth[q]) & set(found[q])) / K for q in range(queries)]))
        print(
            f"    nprobe {nprobe:3d}: {1000 * seconds / queries:.3f} ms/query, recall@10 {nearest:.3f} "
            f"(exact NN in top 10), top-10 overlap {overlap:.3f}"
        )
        figures[f"ivfpq_nprobe{nprobe}_ms_per_query"] = 1000 * seconds / queries
        figures[f"ivfpq_nprobe{nprobe}_recall10"] = nearest
        figures[f"ivfpq_nprobe{nprobe}_overlap10"] = overlap
    return figures


def write_jpegs(folder: Path, count: int) -> list[str]:
    """``count`` distinct 128x64 JPEGs (Market-1501's native size)."""
    rng = np.random.default_rng(2)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        path = folder / f"{i % 500:04d}_c{1 + i % 6}s1_{i:06d}_00.jpg"
        Image.fromarray(coarse).resize((64, 128), Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


def embedding_throughput(images: int, batch_size: int, workers: int, repeats: int) -> dict[str, float]:
    """(c) images/s of embed_paths (disk -> model) vs the model alone on pre-decoded batches."""
    torch.manual_seed(0)
    model = build_model("baseline", num_classes=751, arch="resnet50")
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "model.pt", model, (256, 128))
        loaded = load_model(Path(tmp) / "model.pt")
        paths = write_jpegs(Path(tmp), images)
        tensors = torch.stack([to_model_input(load_image(path), loaded.input_size) for path in paths])
        batches = list(tensors.split(batch_size))

        def bare() -> None:
            for batch in batches:
                loaded.model.embed(batch)

        def pipeline() -> np.ndarray:
            return embed_paths(loaded, paths, "fused", batch_size, workers)

        loaded.model.embed(batches[0])  # warm-up
        timed = race(repeats, {"bare": bare, "pipeline": pipeline})
    vectors = timed["pipeline"][1]
    bare_rate, pipe_rate = images / timed["bare"][0], images / timed["pipeline"][0]
    overhead = 1 - pipe_rate / bare_rate
    print(
        f"(c) embedding {images} JPEGs, baseline resnet50 at 256x128, batch {batch_size}, {workers} workers: "
        f"model alone {bare_rate:.1f} images/s, full pipeline {pipe_rate:.1f} images/s, overhead {overhead:.1%} "
        f"(goal <= 15%); {vectors.shape[1]}-d"
    )
    return {"embed_model_images_per_s": bare_rate, "embed_pipeline_images_per_s": pipe_rate, "embed_overhead": overhead}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run (a), (b) and (c); returns their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a minute or so)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (best is kept)")
    parser.add_argument("--parts", default="abc", help="which measurements to run, e.g. 'c' or 'ab'")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}")
    sizes = {
        "c": {"images": 64 if args.quick else 192, "batch_size": 32, "workers": 2, "repeats": args.repeats},
        # (gallery size, dim): 1024-d up to 100k; 512-d at 1M keeps the 1,000 x 1M score matrix + vectors at 6 GB
        "a": [(1_000, 1024), (20_000, 1024), (100_000, 1024)] + ([] if args.quick else [(1_000_000, 512)]),
        "b": {"gallery_size": 100_000 if args.quick else 1_000_000, "nlist": 256 if args.quick else 1024},
    }
    figures: dict[str, float] = {}
    if "c" in args.parts:
        figures |= embedding_throughput(**sizes["c"])
    if "a" in args.parts:
        figures |= faiss_threads(20_000, 1024, queries=1_000, repeats=args.repeats)
        for gallery_size, dim in sizes["a"]:
            figures |= exact_search(gallery_size, dim, queries=1_000, repeats=args.repeats)
    if "b" in args.parts:
        figures |= approximate_search(**sizes["b"], dim=256, queries=500 if args.quick else 1_000, pq_m=0)
    return figures


if __name__ == "__main__":
    main()
