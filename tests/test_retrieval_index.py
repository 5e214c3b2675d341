"""Index directories and FAISS search, built straight from vectors (no model): ties, recall, validation."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from reidx.device import Devices
from reidx.errors import ReidxError
from reidx.gallery import IndexSpec, backend_class, open_gallery_dir
from reidx.gallery.base import GalleryWrite
from reidx.gallery.directory import (
    HEADER_NAME,
    METADATA_NAME,
    BackendRecord,
    IndexHeader,
    MetadataColumns,
    write_directory,
)
from reidx.gallery.faiss import exact, ondisk
from reidx.gallery.faiss.devices import index_bytes, inner_index, shard_across_gpus, to_device
from reidx.gallery.faiss.index import (
    INDEX_NAME,
    LISTS_NAME,
    FaissGallery,
    flat_vectors,
    new_faiss_index,
    pre_transformed,
    write_faiss,
)
from reidx.gallery.layout import MIN_IVFPQ_VECTORS, ivf_lists, ivfpq_params
from reidx.gallery.ranking import top_k

FINGERPRINT = {"checkpoint_sha256": "0" * 64, "mode": "fused", "input_size": [64, 32]}


def normalised(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def clustered(count: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Normalised points scattered around random cluster centres (a stand-in for re-ID embeddings)."""
    picks = centres[rng.integers(0, len(centres), count)]
    return normalised(picks + 0.5 * rng.standard_normal((count, dim)).astype(np.float32))


def write_vectors(
    directory: Path, vectors: np.ndarray, index_type: str = "flat", params: dict | None = None, train: int = 0
) -> Path:
    """An index directory holding ``vectors`` (the first ``train``, or all, train it), placeholder metadata."""
    params = params or {}
    index = new_faiss_index(vectors.shape[1], index_type, params)
    index.train(vectors[: train or len(vectors)])
    index.add(vectors)
    count = len(vectors)
    header = IndexHeader(FINGERPRINT, "model.pt", "baseline", vectors.shape[1], count, index_type, params)
    metadata = pd.DataFrame({"path": [f"img{i:06d}.png" for i in range(count)], "pid": -1, "camid": -1})
    write_directory(directory, header, metadata, vectors=lambda tmp: write_faiss(index, tmp / INDEX_NAME))
    return directory


def test_ties_come_back_in_gallery_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = normalised(rng.standard_normal((4, 8)))
    gallery = base[[0, 1, 0, 2, 0, 3, 0, 1, 0] * 5]  # 25 exact copies of base[0], 10 of base[1]
    index = open_gallery_dir(write_vectors(tmp_path / "idx", gallery), Devices("cpu"))
    similarity = gallery @ base[:2].T
    for k in (1, 2, 3, 5, 9, 12, 30, 45):
        scores, ids = index.search(base[:2], k)
        for row in range(2):
            stable = np.argsort(-similarity[:, row], kind="stable")[:k]
            np.testing.assert_array_equal(ids[row], stable)
        assert np.all(np.diff(scores, axis=1) <= 0)


def test_flat_search_equals_torch_topk(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gallery, queries = normalised(rng.standard_normal((500, 32))), normalised(rng.standard_normal((30, 32)))
    index = open_gallery_dir(write_vectors(tmp_path / "idx", gallery), Devices("cpu"))
    scores, ids = index.search(queries, 20)
    expected_scores, expected_ids = torch.topk(torch.from_numpy(queries) @ torch.from_numpy(gallery).T, 20)
    np.testing.assert_array_equal(ids, expected_ids.numpy())
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-5)
    assert index.search(queries[:1], 10_000)[1].shape == (1, 500)  # k is clipped to the gallery size


@pytest.fixture
def one_faiss_thread():
    """FAISS k-means on one thread: OpenMP barriers crawl on a shared, oversubscribed 2-core machine."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def test_ivfpq_recall_against_exact(tmp_path: Path, one_faiss_thread) -> None:
    """recall@10 = share of queries whose exact nearest neighbour is in the ivfpq top 10 (the ANN
    benchmark convention); 20k 64-d clustered vectors, quantizers trained on 10k of them."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((100, 64)).astype(np.float32)
    gallery, queries = clustered(20_000, 64, rng, centres), clustered(300, 64, rng, centres)
    params = ivfpq_params(64, ivf_lists(len(gallery), 128), pq_m=32, nprobe=16)
    approx = open_gallery_dir(write_vectors(tmp_path / "ivfpq", gallery, "ivfpq", params, train=10_000), Devices("cpu"))
    assert approx.header.index_type == "ivfpq" and approx.header.params == {"nlist": 128, "pq_m": 32, "nprobe": 16}
    _, found = approx.search(queries, 10)
    nearest = np.argmax(queries @ gallery.T, axis=1)
    recall = np.mean([nearest[q] in found[q] for q in range(len(queries))])
    assert recall >= 0.9
    _, one_list = approx.search(queries, 10, nprobe=1)
    assert np.mean([nearest[q] in one_list[q] for q in range(len(queries))]) < recall


def test_ivfpq_parameters_are_checked() -> None:
    with pytest.raises(ReidxError, match="--index flat"):
        ivf_lists(5_000)
    with pytest.raises(ReidxError, match="--nlist 256 or fewer"):
        ivf_lists(10_000, 1_000)
    assert ivf_lists(20_000) == 20_000 // 39 and ivf_lists(100_000) == round(4 * 100_000**0.5)
    with pytest.raises(ReidxError, match="does not divide"):
        ivfpq_params(100, 64, pq_m=16)
    assert ivfpq_params(1024, 64) == {"nlist": 64, "pq_m": 64, "nprobe": 8}
    assert ivfpq_params(2048, 4000)["pq_m"] == 64 and ivfpq_params(2048, 4000)["nprobe"] == 250


def test_cpu_device_and_missing_gpu() -> None:
    index = new_faiss_index(8, "flat", {})
    assert to_device(index, Devices("cpu")) == (index, False)
    if faiss.get_num_gpus() == 0:
        assert to_device(index, Devices("auto")) == (index, False)
        with pytest.raises(ReidxError, match="FAISS sees no GPU"):
            to_device(index, Devices("cuda"))


def truncate_index(directory: Path) -> None:
    path = directory / INDEX_NAME
    path.write_bytes(path.read_bytes()[:100])


def drop_metadata_row(directory: Path) -> None:
    path = directory / METADATA_NAME
    pd.read_parquet(path).iloc[:-1].to_parquet(path)


def drop_fingerprint_mode(directory: Path) -> None:
    path = directory / HEADER_NAME
    header = json.loads(path.read_text())
    del header["fingerprint"]["mode"]
    path.write_text(json.dumps(header))


def bump_header_count(directory: Path) -> None:
    path = directory / HEADER_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), "count": 11}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / HEADER_NAME).unlink(), "is not a reidx index"),
        (lambda d: (d / HEADER_NAME).write_text("{not json"), "cannot read"),
        (lambda d: (d / HEADER_NAME).write_text('{"format": "x"}'), "cannot read"),
        (drop_fingerprint_mode, "no valid embedding fingerprint"),
        (lambda d: (d / INDEX_NAME).unlink(), "index.faiss is missing"),
        (truncate_index, "cannot read"),
        (lambda d: (d / METADATA_NAME).write_bytes(b"garbage"), "cannot read"),
        (drop_metadata_row, "inconsistent"),
        (bump_header_count, "inconsistent"),
    ],
)
def test_damaged_index_is_one_clear_error(tmp_path: Path, damage, message: str) -> None:
    directory = write_vectors(tmp_path / "idx", normalised(np.random.default_rng(3).standard_normal((10, 8))))
    damage(directory)
    with pytest.raises(ReidxError, match=message) as error:
        open_gallery_dir(directory, Devices("cpu"))
    assert "\n" not in error.value.line()


def test_missing_index_directory(tmp_path: Path) -> None:
    with pytest.raises(ReidxError, match="no index at"):
        open_gallery_dir(tmp_path / "nowhere", Devices("cpu"))


@pytest.mark.parametrize(
    ("block_floats", "dim", "numpy_width"), [(7 * 3, 16, 0), (64 * 3, 17, 4096), (exact.BLOCK_FLOATS, 33, 0)]
)
def test_exact_top_k_is_tie_exact_across_blocks(monkeypatch, block_floats: int, dim: int, numpy_width: int) -> None:
    """Ties inside a block, straddling a block's k-th place and spread over blocks all come back by id
    (blocks selected from by torch.topk, or by numpy for ``numpy_width``)."""
    monkeypatch.setattr(exact, "BLOCK_FLOATS", block_floats)
    monkeypatch.setattr(exact, "NUMPY_SELECT_WIDTH", numpy_width)
    monkeypatch.setattr(exact, "QUERY_BLOCK", 2)
    rng = np.random.default_rng(3)
    base = normalised(rng.standard_normal((5, dim)))
    gallery = np.ascontiguousarray(base[rng.integers(0, 5, 200)])  # ~40 exact copies of each vector
    queries = np.ascontiguousarray(np.concatenate([base[:2], normalised(rng.standard_normal((1, dim)))]))
    similarity = queries @ gallery.T
    for k in (1, 3, 10, 39, 41, 200):
        scores, ids = exact.exact_top_k(gallery, queries, k)
        assert scores.dtype == np.float32 and ids.shape == (len(queries), k)
        for row in range(len(queries)):
            stable = np.argsort(-similarity[row], kind="stable")[:k]
            np.testing.assert_array_equal(ids[row], stable)
            np.testing.assert_allclose(scores[row], similarity[row, stable], atol=1e-6)


def test_exact_top_k_orders_by_exact_scores_not_float32_rounding() -> None:
    """Scores a float32 ulp apart: the float64 order wins whatever the BLAS rounds them to."""
    rng = np.random.default_rng(4)
    query = normalised(rng.standard_normal((1, 256)))
    gallery = np.repeat(query, 50, axis=0)
    gallery[::2] += np.float32(2e-8) * rng.standard_normal((25, 256), dtype=np.float32)  # below float32 resolution
    scores, ids = exact.exact_top_k(np.ascontiguousarray(gallery), query, 50)
    truth = gallery.astype(np.float64) @ query[0].astype(np.float64)
    np.testing.assert_array_equal(ids[0], np.lexsort((np.arange(50), -truth)))


def trained_ivfpq(vectors: np.ndarray, params: dict) -> faiss.Index:
    index = new_faiss_index(vectors.shape[1], "ivfpq", params)
    index.train(vectors)
    return index


def test_on_disk_ivfpq_searches_like_the_in_memory_one(tmp_path: Path, monkeypatch, one_faiss_thread) -> None:
    """Shards of 700 vectors merged into one lists file that follows the folder's rename; same hits."""
    monkeypatch.setattr(ondisk, "SHARD_VECTORS", 700)
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    gallery, queries = clustered(MIN_IVFPQ_VECTORS, 16, rng, centres), clustered(20, 16, rng, centres)
    params = ivfpq_params(16, 16, pq_m=4, nprobe=4)
    memory = trained_ivfpq(gallery, params)
    disk = faiss.clone_index(memory)
    memory.add(gallery)
    header = IndexHeader(FINGERPRINT, "model.pt", "baseline", 16, len(gallery), "ivfpq", params | {"on_disk": 1})
    metadata = pd.DataFrame({"path": [f"img{i:06d}.png" for i in range(len(gallery))], "pid": -1, "camid": -1})
    parts = np.array_split(gallery, 7)
    write_directory(
        tmp_path / "idx",
        header,
        metadata,
        vectors=lambda tmp: ondisk.write_on_disk(disk, parts, tmp / INDEX_NAME, tmp / LISTS_NAME),
    )
    (tmp_path / "idx").rename(tmp_path / "moved")
    assert sorted(path.name for path in (tmp_path / "moved").iterdir()) == sorted(
        [HEADER_NAME, INDEX_NAME, METADATA_NAME, LISTS_NAME, ".reidx-output.json"]
    )
    opened = open_gallery_dir(tmp_path / "moved", Devices("cpu"))
    expected = top_k(memory.search, queries, 10, len(gallery))
    np.testing.assert_array_equal(opened.search(queries, 10)[1], expected[1])
    (tmp_path / "moved" / LISTS_NAME).unlink()
    with pytest.raises(ReidxError, match="incomplete"):
        open_gallery_dir(tmp_path / "moved", Devices("cpu"))


def test_reduce_dim_keeps_the_query_dim_and_finds_neighbours(tmp_path: Path) -> None:
    """A PCA to 8 of 32 dims inside a flat index: 32-d queries still search, header and file agree."""
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((30, 32)).astype(np.float32)
    gallery = clustered(600, 32, rng, centres)
    directory = write_vectors(tmp_path / "pca", gallery, "flat", {"reduce_dim": 8})
    index = open_gallery_dir(directory, Devices("cpu"))
    assert index.header.dim == 32 and index.index.d == 32 and index.header.params == {"reduce_dim": 8}
    scores, ids = index.search(gallery[:50], 5)
    assert np.mean(ids[:, 0] == np.arange(50)) >= 0.9  # each vector finds itself after the projection
    reduced = exact.exact_top_k(flat_vectors(inner_index(index.index)), pre_transformed(index.index, gallery[:50]), 5)
    np.testing.assert_array_equal(ids, reduced[1])
    assert np.all(scores <= 1 + 1e-5)  # cosines in the reduced space
    header = json.loads((directory / HEADER_NAME).read_text())
    (directory / HEADER_NAME).write_text(json.dumps(header | {"params": {}}))
    with pytest.raises(ReidxError, match="not the trained"):
        open_gallery_dir(directory, Devices("cpu"))


def test_layout_options_are_checked() -> None:
    assert IndexSpec(on_disk=True, reduce_dim=256).layout_params(512, "ivfpq", 64) == {
        "nlist": 64,
        "pq_m": 64,
        "nprobe": 8,
        "on_disk": 1,
        "reduce_dim": 256,
    }
    assert IndexSpec().layout_params(512, "flat", 0) == {}
    with pytest.raises(ReidxError, match="not below"):
        IndexSpec(reduce_dim=256).layout_params(256, "flat", 0)
    with pytest.raises(ReidxError, match="--index ivfpq"):
        IndexSpec(on_disk=True).check_layout("flat", FaissGallery, 10_000)
    with pytest.raises(ReidxError, match="drop them with --backend milvus"):
        IndexSpec(reduce_dim=16).check_layout("flat", backend_class("milvus"), 10_000)
    with pytest.raises(ReidxError, match="needs at least 256 images"):
        IndexSpec(reduce_dim=256).check_layout("flat", FaissGallery, 100)


def test_gpu_sharding_is_chosen_by_size() -> None:
    """(The GPU path itself is not run here: no GPU.) Shard only with several GPUs and too little room."""
    gib = 2**30
    assert not shard_across_gpus(10 * gib, [80 * gib])  # one GPU: replicate (or fail) as before
    assert not shard_across_gpus(10 * gib, [80 * gib, 80 * gib])
    assert shard_across_gpus(70 * gib, [80 * gib, 80 * gib])
    assert shard_across_gpus(10 * gib, [80 * gib, 12 * gib])  # the smallest GPU decides
    flat = new_faiss_index(16, "flat", {})
    flat.add(np.zeros((10, 16), np.float32))
    assert index_bytes(flat) == 10 * 16 * 4


def test_embed_write_path_builds_an_on_disk_pca_ivfpq_index(tmp_path: Path, one_faiss_thread) -> None:
    """The FAISS backend's write (what `reidx embed --index ivfpq --on-disk --reduce-dim` runs after
    embedding) from chunk files: PCA 32 -> 16, lists on disk, searched with 32-d queries."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 32)).astype(np.float32)
    vectors = clustered(MIN_IVFPQ_VECTORS, 32, rng, centres)
    chunks = []
    for number, part in enumerate(np.array_split(vectors, 3)):
        chunks.append(tmp_path / f"chunk{number}.npy")
        np.save(chunks[-1], part)
    params = IndexSpec(pq_m=4, nprobe=4, on_disk=True, reduce_dim=16).layout_params(32, "ivfpq", 16)
    header = IndexHeader(FINGERPRINT, "model.pt", "baseline", 32, 0, "ivfpq", params)
    metadata = pd.DataFrame({"path": [f"img{i:06d}.png" for i in range(len(vectors))], "pid": -1, "camid": -1})
    FaissGallery.write(GalleryWrite(tmp_path / "idx", header, None, metadata, chunks, Devices("cpu"), BackendRecord()))
    opened = open_gallery_dir(tmp_path / "idx", Devices("cpu"))
    assert opened.header.count == len(vectors) and (tmp_path / "idx" / LISTS_NAME).is_file()
    assert opened.header.params == {"nlist": 16, "pq_m": 4, "nprobe": 4, "reduce_dim": 16, "on_disk": 1}
    _, ids = opened.search(vectors[:100], 10)
    assert np.mean([row in ids[row] for row in range(100)]) >= 0.5  # approximate, but it finds itself


def test_metadata_columns_read_without_pandas_as_pandas_reads_them(tmp_path: Path) -> None:
    """``Gallery.columns``: integer columns straight from their buffers (several chunks, a sliced chunk), text and
    columns with empty values as objects; the same values and table as ``pd.read_parquet``."""
    pa = pytest.importorskip("pyarrow")
    pids = pa.chunked_array([pa.array([5, 6, 7], pa.int32()).slice(1), pa.array([8, 9], pa.int32())])
    table = pa.table({"path": ["a", "b", "c", "d"], "pid": pids, "trial": pa.array([0, None, 2, 3], pa.int64())})
    columns = MetadataColumns(table)
    assert columns["pid"].dtype == np.int64 and columns["pid"].tolist() == [6, 7, 8, 9]
    assert columns["path"].tolist() == ["a", "b", "c", "d"] and columns["trial"].tolist() == [0, None, 2, 3]
    assert len(columns) == 4
    index = write_vectors(tmp_path / "idx", normalised(np.random.default_rng(3).standard_normal((10, 8))))
    opened = open_gallery_dir(index, Devices("cpu"))
    frame = pd.read_parquet(index / METADATA_NAME)
    assert opened.metadata.equals(frame)
    for name in ("path", "pid", "camid"):
        assert opened.columns[name].tolist() == frame[name].tolist(), name
