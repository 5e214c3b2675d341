"""Average query expansion against a brute-force oracle (whole score rows, stable sort): ties, K beyond the
gallery, K = 0, a query equal to a gallery item, blocked searches, and no (queries x gallery) array."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from reidx.errors import ReidxError
from reidx.gallery.faiss import exact
from reidx.retrieval.expansion import average_query_expansion, left_out_expansion


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def oracle(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Per query: every gallery score in float64 (each row summed alike, so equal scores tie exactly), a
    stable sort (ties by gallery row), the mean of the query and its first K, normalised."""
    out = []
    for q in queries.astype(np.float64):
        scores = (gallery.astype(np.float64) * q).sum(1)
        near = np.argsort(-scores, kind="stable")[:k]
        mean = (q + gallery[near].astype(np.float64).sum(0)) / (1 + len(near))
        out.append(mean / np.linalg.norm(mean))
    return np.array(out, dtype=np.float32).reshape(len(queries), gallery.shape[1])


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_random_vectors_equal_the_oracle(k):
    rng = np.random.default_rng(0)
    queries, gallery = unit(rng.standard_normal((40, 16))), unit(rng.standard_normal((300, 16)))
    ours = average_query_expansion(queries, gallery, k)
    assert ours.dtype == np.float32 and ours.shape == queries.shape
    np.testing.assert_allclose(ours, oracle(queries, gallery, k), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)


def test_ties_go_to_the_lower_gallery_row():
    # the gallery rows 1..4 all score exactly cos(t) against e0 but are different vectors: K = 2 must take
    # rows 1 and 2 (gallery order), whatever the engine's blocks
    dim, t = 8, 0.7
    gallery = np.zeros((6, dim), np.float32)
    gallery[0] = unit(np.r_[-1.0, 1.0, np.zeros(dim - 2)])  # scores below the tied group
    for row in range(1, 5):
        gallery[row, 0], gallery[row, row] = np.cos(t), np.sin(t)
    gallery[5, 7] = 1.0  # orthogonal: score 0
    query = np.eye(dim, dtype=np.float32)[:1]
    ours = average_query_expansion(query, gallery, 2)
    expected = query[0].astype(np.float64) + gallery[1] + gallery[2]
    np.testing.assert_allclose(ours[0], expected / np.linalg.norm(expected), atol=1e-7)
    np.testing.assert_allclose(ours, oracle(query, gallery, 2), atol=1e-7)


def test_ties_and_duplicates_on_clustered_data_equal_the_oracle(monkeypatch):
    rng = np.random.default_rng(3)
    base = unit(rng.standard_normal((30, 12)))
    gallery = base[rng.integers(0, 30, 200)]  # many exact duplicates: equal scores
    queries = np.concatenate([base[:10], unit(rng.standard_normal((10, 12)))])
    monkeypatch.setattr(exact, "BLOCK_FLOATS", 64)  # tied groups split across gallery blocks
    for k in (1, 3, 7, 25):
        np.testing.assert_allclose(
            average_query_expansion(queries, gallery, k), oracle(queries, gallery, k), rtol=0, atol=1e-6
        )


def test_k_zero_returns_the_queries_unchanged():
    rng = np.random.default_rng(1)
    queries, gallery = unit(rng.standard_normal((5, 8))), unit(rng.standard_normal((9, 8)))
    ours = average_query_expansion(queries, gallery, 0)
    assert (ours == queries).all()
    ours[0] = 0  # a copy: the caller's array is not written
    assert (queries[0] != 0).any()


def test_k_beyond_the_gallery_uses_the_whole_gallery():
    rng = np.random.default_rng(2)
    queries, gallery = unit(rng.standard_normal((4, 8))), unit(rng.standard_normal((6, 8)))
    ours = average_query_expansion(queries, gallery, 50)
    total = queries.astype(np.float64) + gallery.astype(np.float64).sum(0)
    np.testing.assert_allclose(ours, total / np.linalg.norm(total, axis=1, keepdims=True), atol=1e-6)
    assert (ours == average_query_expansion(queries, gallery, 6)).all()
    empty = np.empty((0, 8), np.float32)
    assert (average_query_expansion(queries, empty, 3) == queries).all()
    assert average_query_expansion(empty, gallery, 3).shape == (0, 8)


def test_a_query_equal_to_a_gallery_item():
    rng = np.random.default_rng(4)
    gallery = unit(rng.standard_normal((50, 16)))
    queries = gallery[[7, 30]].copy()
    # K = 1: its nearest is itself, so the mean is the query again
    np.testing.assert_allclose(average_query_expansion(queries, gallery, 1), queries, atol=1e-7)
    # K = 3: itself counted twice (as the query and as its own first neighbour), then the next two
    ours = average_query_expansion(queries, gallery, 3)
    for row, item in enumerate([7, 30]):
        near = np.argsort(-(gallery.astype(np.float64) @ gallery[item].astype(np.float64)), kind="stable")[:3]
        assert near[0] == item
        total = gallery[item].astype(np.float64) + gallery[near].astype(np.float64).sum(0)
        np.testing.assert_allclose(ours[row], total / np.linalg.norm(total), atol=1e-6)


def test_neighbours_that_cancel_the_query_leave_it_unchanged():
    query = np.eye(4, dtype=np.float32)[:1]
    assert (average_query_expansion(query, -query, 1) == query).all()


def test_blocked_search_needs_no_queries_by_gallery_array(monkeypatch):
    rng = np.random.default_rng(5)
    queries, gallery = unit(rng.standard_normal((600, 8))), unit(rng.standard_normal((6000, 8)))
    whole = average_query_expansion(queries, gallery, 4)
    monkeypatch.setattr(exact, "BLOCK_FLOATS", 1 << 15)
    monkeypatch.setattr(exact, "QUERY_BLOCK", 128)
    tracemalloc.start()
    try:
        blocked = average_query_expansion(queries, gallery, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (blocked == whole).all()
    assert peak < len(queries) * len(gallery) * 4 / 4  # a quarter of one float32 (queries x gallery) array


@pytest.mark.parametrize(
    ("queries", "gallery", "k", "words"),
    [
        (np.ones((2, 4)), np.ones((3, 5)), 1, "dimension 4 but the gallery 5"),
        (np.ones(4), np.ones((3, 4)), 1, "shape (4,)"),
        (np.full((2, 4), np.nan), np.ones((3, 4)), 1, "NaN or inf"),
        (np.ones((2, 4)), np.ones((3, 4)), -1, "K must be a whole number"),
        (np.ones((2, 4)), np.ones((3, 4)), 1.5, "K must be a whole number"),
    ],
)
def test_bad_input_is_one_line(queries, gallery, k, words):
    with pytest.raises(ReidxError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        average_query_expansion(queries, gallery, k)
    assert "\n" not in info.value.line()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_left_out_expansion_expands_each_query_without_its_identity(monkeypatch, k):
    """Equal to expanding each pid's queries against the gallery without that pid; duplicates (exact ties)
    across gallery blocks; a pid absent from the gallery; a pid leaving fewer than K other items."""
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((12, 10)))
    g_pids = rng.integers(0, 12, 90)
    gallery = base[g_pids]  # every item of a pid is the same vector: ties everywhere
    q_pids = np.r_[np.arange(12), 40]
    queries = unit(base[np.minimum(q_pids, 11)] + 0.2 * rng.standard_normal((13, 10)))
    monkeypatch.setattr(exact, "BLOCK_FLOATS", 64)
    ours = left_out_expansion(queries, gallery, q_pids, g_pids, k)
    for pid in np.unique(q_pids):
        rows = q_pids == pid
        expected = average_query_expansion(queries[rows], gallery[g_pids != pid], k)
        np.testing.assert_allclose(ours[rows], expected, rtol=0, atol=1e-7)
        np.testing.assert_allclose(ours[rows], oracle(queries[rows], gallery[g_pids != pid], k), atol=1e-6)
    few = left_out_expansion(queries[:2], gallery[:3], [g_pids[0], 40], [g_pids[0], g_pids[0], 99], 5)
    expected = queries[0].astype(np.float64) + gallery[2]
    np.testing.assert_allclose(few[0], expected / np.linalg.norm(expected), atol=1e-7)  # one other item left
    np.testing.assert_allclose(few[1], average_query_expansion(queries[1:2], gallery[:3], 5)[0], atol=1e-7)
