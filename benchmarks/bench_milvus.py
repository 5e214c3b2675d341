"""Milvus Lite vs FAISS as reidx gallery backends, on the same vectors in one run.

For each gallery size: 256-d unit vectors with re-ID-like cluster structure (as bench_retrieval (b)) are
written as embedding chunks, then stored through reidx's own backends (``reidx.gallery``): FAISS
``IndexFlatIP`` in the index directory, and a Milvus Lite collection (FLAT, the one exact index Lite has).
Measured: build time (FAISS: add + write the directory; Milvus: create, insert, flush + directory), open
time, ms/query for a batch of queries and for single queries (what ``reidx serve`` sees), both through the
tie-exact top-k, and recall@10 against FAISS's exact result (share of queries whose exact nearest
neighbour is in the top 10) and the top-10 overlap.

Usage: ``nice -n 10 python -m benchmarks.bench_milvus [--quick] [--sizes 100000,1000000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_retrieval import embedding_like
from reidx.device import Devices
from reidx.gallery import BackendRecord, GalleryWrite, IndexHeader, backend_class, open_gallery_dir

K = 10
DIM = 256
CHUNK = 100_000
FINGERPRINT = {"checkpoint_sha256": "0" * 64, "mode": "fused", "input_size": [256, 128]}


def timed(run):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def write_chunks(folder: Path, count: int, model: dict[str, np.ndarray], rng: np.random.Generator) -> list[Path]:
    """The gallery as embedding chunk files, as ``reidx embed`` leaves them before storing."""
    chunks = []
    for start in range(0, count, CHUNK):
        path = folder / f"chunk-{start:010d}.npy"
        np.save(path, embedding_like(min(CHUNK, count - start), model, rng))
        chunks.append(path)
    return chunks


def compare(size: int, queries: int, singles: int, root: Path) -> dict[str, float]:
    """Build, open and search both backends at one gallery size."""
    rng = np.random.default_rng(size)
    model = {
        "centres": rng.standard_normal((2_000, 32), dtype=np.float32),
        "projection": rng.standard_normal((32, DIM), dtype=np.float32),
    }
    folder = root / f"n{size}"
    folder.mkdir()
    chunks = write_chunks(folder, size, model, rng)
    query = embedding_like(queries, model, rng)
    paths = [f"/g/{i:08d}.png" for i in range(size)]
    metadata = pd.DataFrame({"path": paths, "pid": rng.integers(0, 2_000, size), "camid": rng.integers(1, 7, size)})
    records = {
        "faiss": BackendRecord(),
        "milvus": BackendRecord("milvus", str(folder / "gallery.db"), f"bench_{size}"),
    }
    figures: dict[str, float] = {}
    found: dict[str, np.ndarray] = {}
    for name, record in records.items():
        figures |= measure(name, record, folder, metadata, chunks, query, singles, found)
    truth, other = found["faiss"], found["milvus"]
    nearest = float(np.mean([truth[q, 0] in other[q] for q in range(queries)]))
    overlap = float(np.mean([len(set(truth[q]) & set(other[q])) / K for q in range(queries)]))
    same = float(np.mean(truth == other))
    print(f"milvus vs exact at {size:,}: recall@10 {nearest:.4f}, top-10 overlap {overlap:.4f}, same ids {same:.4f}")
    sizes = {"milvus": disk_size(folder / "gallery.db"), "faiss": disk_size(folder / "idx-faiss" / "index.faiss")}
    print(f"       on disk: Milvus Lite {sizes['milvus'] / 2**30:.2f} GiB, FAISS {sizes['faiss'] / 2**30:.2f} GiB")
    return figures | {
        f"milvus_{size}_recall10": nearest,
        f"milvus_{size}_overlap10": overlap,
        f"milvus_{size}_same_ids": same,
    }


def measure(name, record, folder, metadata, chunks, query, singles, found) -> dict[str, float]:
    """Build, open and search one backend; its ids go to ``found[name]``."""
    cpu, size, queries = Devices("cpu"), len(metadata), len(query)
    header = IndexHeader(dict(FINGERPRINT), "model.pt", "baseline", DIM, 0, "flat", {})
    out = folder / f"idx-{name}"
    job = GalleryWrite(out, header, None, metadata, chunks, cpu, record)
    build_s, _ = timed(lambda: backend_class(name).write(job))
    open_s, gallery = timed(lambda: open_gallery_dir(out, cpu))
    gallery.search(query[:2], K)  # warm-up
    batch_s, (_, ids) = timed(lambda: gallery.search(query, K))
    single = [timed(lambda row=row: gallery.search(query[row : row + 1], K))[0] for row in range(singles)]
    found[name] = ids
    median = 1000 * float(np.median(single))
    print(
        f"{name:6s} {size:>9,} x {DIM}-d: build {build_s:7.1f} s, open {open_s:5.1f} s, "
        f"batch of {queries}: {1000 * batch_s / queries:7.2f} ms/query, single query: {median:7.2f} ms "
        f"(median of {singles})",
        flush=True,
    )
    return {
        f"{name}_{size}_build_s": build_s,
        f"{name}_{size}_open_s": open_s,
        f"{name}_{size}_batch_ms_per_query": 1000 * batch_s / queries,
        f"{name}_{size}_single_ms_median": median,
    }


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Compare the backends at each size; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small size (under a minute)")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--queries", type=int, default=1_000, help="queries in the timed batch")
    parser.add_argument("--singles", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--workdir", default=None, help="folder for the chunks and indexes (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as root:
        for size in sizes:
            figures |= compare(size, args.queries, args.singles, Path(root))
    return figures


if __name__ == "__main__":
    main()
