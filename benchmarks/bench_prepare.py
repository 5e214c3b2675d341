"""Time ``prepare`` on a Market-1501-sized tree (goal: under 60 s on 2 cores).

The tree has Market's file counts (12,936 train, 3,368 query, 19,732 test of which 3,819 junk) as 128x64
JPEGs in a temporary folder; 64 distinct JPEG blobs are written under the many names, so building it is
fast while every file still has to be decoded. Usage: ``python benchmarks/bench_prepare.py [--workers 1,2]``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reidx.data.prepare import default_workers, prepare_dataset

TRAIN, QUERY, TEST, JUNK = 12_936, 3_368, 19_732, 3_819
TRAIN_IDS, TEST_IDS = 751, 750


def jpeg_blobs(count: int = 64, seed: int = 0) -> list[bytes]:
    """``count`` distinct 128x64 JPEG files as bytes."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(coarse).resize((64, 128), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def write_market_tree(root: Path) -> int:
    """Market-sized ``bounding_box_train``/``query``/``bounding_box_test``; returns the file count."""
    blobs = jpeg_blobs()
    plan = {
        "bounding_box_train": [(1 + i % TRAIN_IDS, i) for i in range(TRAIN)],
        "query": [(TRAIN_IDS + 1 + i % TEST_IDS, i) for i in range(QUERY)],
        "bounding_box_test": [(TRAIN_IDS + 1 + i % TEST_IDS, i) for i in range(TEST - JUNK)]
        + [(-1, i) for i in range(JUNK)],
    }
    count = 0
    for folder, items in plan.items():
        (root / folder).mkdir(parents=True)
        for pid, index in items:
            # query images come from camera 1, gallery images from cameras 2-6, so every query has a match
            camera = 1 if folder == "query" else 2 + index % 5
            name = f"{pid:04d}_c{camera}s1_{index:06d}_00.jpg" if pid >= 0 else f"-1_c{camera}s1_{index:06d}_00.jpg"
            (root / folder / name).write_bytes(blobs[count % len(blobs)])
            count += 1
    return count


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time prepare; returns the figures of the fastest worker count (``seconds``, ``images_per_s``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default=str(default_workers()), help="comma-separated thread counts to time")
    parser.add_argument("--quick", action="store_true", help="accepted for the summary runner; same size")
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "market1501"
        start = time.perf_counter()
        files = write_market_tree(root)
        print(f"wrote {files} files in {time.perf_counter() - start:.1f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            start = time.perf_counter()
            info = prepare_dataset("market1501", root, Path(tmp) / f"out{workers}", rates=(2, 3, 4), workers=workers)
            seconds = time.perf_counter() - start
            rows = sum(row["images"] for row in info.extra["summary"].values())
            print(
                f"prepare market1501: {rows} rows, {files - JUNK} images decoded, {QUERY} LR images written; "
                f"{workers} thread(s): {seconds:.1f} s = {(files - JUNK) / seconds:.0f} images/s"
            )
            if not figures or seconds < figures["seconds"]:
                figures = {"seconds": seconds, "images_per_s": (files - JUNK) / seconds, "goal_seconds": 60.0}
    return figures


if __name__ == "__main__":
    main()
