"""``torchrun -m reidx embed``: two real CPU processes (gloo) build the same index as one process, resume
per shard after a failure, and fill one Milvus collection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidx.device import Devices
from reidx.gallery import open_gallery_dir
from reidx.models.loading import load_model
from reidx.retrieval import build_index, images_table
from reidx.retrieval.requests import EmbedJob
from reidx.retrieval.shards import shard_span

CPU = Devices("cpu")


def test_shards_cover_the_list_in_order() -> None:
    for count in (0, 1, 5, 12):
        for world in (1, 2, 3):
            spans = [shard_span(count, rank, world) for rank in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == count
            assert all(spans[i][1] == spans[i + 1][0] for i in range(world - 1))


def two_ranks(*target: str) -> subprocess.CompletedProcess:
    """``target`` (a script, or ``-m MODULE ARGS``) as two torchrun processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``reidx --device cpu embed ARGS`` as two torchrun processes on this machine."""
    return two_ranks("-m", "reidx", "--device", "cpu", "embed", *args, "--workers", "0", "--batch-size", "2")


RANK_SCRIPT = """
import sys
import torch.distributed as dist
from reidx.device import Devices
from reidx.distributed import setup, teardown

env = setup(Devices("cpu"))
gathered = [None] * env.world_size
dist.all_gather_object(gathered, env.rank)
import torchvision  # noqa: E402,F401 - as model loading does, after the group exists
group = dist.group.WORLD
teardown(env)
print(f"rank {env.rank}: references left {sys.getrefcount(group) - 1}")
"""


@pytest.mark.slow
def test_teardown_frees_the_group_so_no_gloo_thread_outlives_it(tmp_path: Path) -> None:
    """Left alive, the group's gloo threads can free a collective's tensors while the interpreter exits, which
    aborts the rank (a one-in-ten failure of the resume test below, under load)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    done = two_ranks(str(script))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:2]) == [f"rank {r}: references left 1" for r in (0, 1)], done.stdout


def vectors_of(gallery) -> np.ndarray:
    return gallery.index.reconstruct_n(0, len(gallery))


@pytest.mark.slow
def test_two_processes_build_one_index_and_resume_per_shard(tiny_gallery: Path, tmp_path: Path) -> None:
    images = Path(shutil.copytree(tiny_gallery / "gallery", tmp_path / "images"))
    paths = sorted(images.glob("*.png"))
    loaded = load_model(tiny_gallery / "model.pt")
    build_index(loaded, images_table([images]), tmp_path / "one", devices=CPU, job=EmbedJob(workers=0))
    single = open_gallery_dir(tmp_path / "one", CPU)
    args = ("--checkpoint", str(tiny_gallery / "model.pt"), str(images), "--out", str(tmp_path / "two"))

    kept = paths[-1].read_bytes()
    paths[-1].write_bytes(b"not an image")  # in rank 1's share: rank 1 fails, rank 0 keeps its chunks
    failed = torchrun(*args)
    assert failed.returncode != 0 and "rank 1: cannot read image" in failed.stderr
    assert len(list((tmp_path / "two" / ".partial" / "shard-000-of-002").glob("chunk-*.npy"))) == 1
    paths[-1].write_bytes(kept)
    for path in paths[:6]:  # rank 0's share: a re-run must resume it from its chunks, not read these again
        path.write_bytes(b"gone")
    done = torchrun(*args)
    assert done.returncode == 0, done.stderr
    assert " ".join(done.stdout.split()).count("12 images (12 added") == 1  # rank 0 alone reports
    sharded = open_gallery_dir(tmp_path / "two", CPU)
    assert sharded.metadata.equals(single.metadata) and sharded.header.count == 12
    np.testing.assert_allclose(vectors_of(sharded), vectors_of(single), atol=1e-5)
    assert not (tmp_path / "two" / ".partial").exists()


@pytest.mark.slow
def test_two_processes_fill_one_milvus_collection(tiny_gallery: Path, tmp_path: Path) -> None:
    lite = str(tmp_path / "gallery.db")
    args = ("--checkpoint", str(tiny_gallery / "model.pt"), str(tiny_gallery / "gallery"), "--out", str(tmp_path / "m"))
    done = torchrun(*args, "--backend", "milvus", "--uri", lite)
    assert done.returncode == 0, done.stderr
    milvus, faiss = open_gallery_dir(tmp_path / "m", CPU), open_gallery_dir(tiny_gallery / "idx", CPU)
    assert milvus.record.backend == "milvus" and milvus.metadata.equals(faiss.metadata)
    queries = vectors_of(faiss)
    found, expected = milvus.search(queries, 5), faiss.search(queries, 5)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_allclose(found[0], expected[0], atol=1e-5)
