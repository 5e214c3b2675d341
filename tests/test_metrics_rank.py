"""CMC / mAP: hand-worked cases, the per-query reference, properties, single-shot and bad input."""

from __future__ import annotations

import itertools
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidx.metrics import MULTI_SHOT_MAP, SINGLE_SHOT_MAP, MetricInputError, evaluate, evaluate_embeddings
from reidx.metrics import _rank_kernel as kernel
from reidx.metrics import rank as rank_module
from reidx.metrics.reference import multi_shot_minp_reference, multi_shot_reference, single_shot_minp_reference


def random_problem(rng, nq, ng, ids, cams, dtype=np.float32):
    return (
        rng.random((nq, ng)).astype(dtype),
        rng.integers(0, ids, nq),
        rng.integers(0, ids, ng),
        rng.integers(0, cams, nq),
        rng.integers(0, cams, ng),
    )


# Gallery: (pid, camid); pid 0 is a distractor.
G_PIDS = np.array([2, 1, 1, 0, 1])
G_CAMS = np.array([1, 1, 0, 1, 2])


def test_hand_worked_multi_shot():
    # query A: pid 1 cam 0. Gallery 2 (pid 1, cam 0) is removed; valid order 0, 1, 3, 4 -> hits at ranks 2, 4.
    # query B: pid 3, absent from the gallery -> skipped.
    # query C: pid 2 cam 1: its only image (gallery 0) is on cam 1 -> removed -> skipped.
    # query D: pid 2 cam 0: order 4, 1, 2, 3, 0 -> hit at rank 5.
    dist = np.array(
        [
            [0.1, 0.2, 0.05, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.5, 0.1, 0.2, 0.3, 0.05],
        ]
    )
    m = evaluate(dist, [1, 3, 2, 2], G_PIDS, [0, 0, 1, 0], G_CAMS, max_rank=8)
    ap_a, ap_d = (1 / 2 + 2 / 4) / 2, 1 / 5
    assert m.num_valid_queries == 2 and m.num_queries == 4
    assert m.mAP == pytest.approx((ap_a + ap_d) / 2)
    np.testing.assert_allclose(m.cmc, [0, 0.5, 0.5, 0.5, 1, 1, 1, 1])  # tail past the gallery repeats
    assert m["mAP"] == m.mAP and m.protocol == "multi-shot" and m.map_definition == MULTI_SHOT_MAP
    assert set(m) >= {"cmc", "mAP", "num_valid_queries"}


@pytest.mark.parametrize(("g_pids", "expected_rank"), [([2, 1], 2), ([1, 2], 1)])
def test_ties_follow_gallery_order(g_pids, expected_rank):
    m = evaluate(np.array([[0.5, 0.5]]), [1], g_pids, [0], [1, 1], max_rank=2)
    assert m.mAP == pytest.approx(1 / expected_rank)
    assert m.cmc[0] == (expected_rank == 1)


def test_equals_torchreid_oracle_on_market_like_data():
    rng = np.random.default_rng(3)
    problem = random_problem(rng, 300, 2000, ids=120, cams=6)
    cmc, m_ap, valid = multi_shot_reference(*problem, max_rank=50, kind="quicksort")
    m = evaluate(*problem, max_rank=50)
    np.testing.assert_allclose(m.cmc, cmc, atol=1e-6)
    assert abs(m.mAP - m_ap) < 1e-6 and m.num_valid_queries == valid


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    nq=st.integers(1, 7),
    ng=st.integers(1, 12),
    dtype=st.sampled_from([np.float32, np.float64, np.int64]),
    sizes=st.sampled_from([(1 << 24, 512), (5, 4), (1 << 24, 2)]),  # (chunk elements, run length)
)
def test_property_equals_per_query_reference(data, nq, ng, dtype, sizes):
    ints = st.integers
    dist = np.array(data.draw(st.lists(ints(-3, 3), min_size=nq * ng, max_size=nq * ng)), dtype=dtype)
    dist = dist.reshape(nq, ng)  # few distinct values: many ties
    labels = [
        np.array(data.draw(st.lists(ints(0, hi), min_size=n, max_size=n)))
        for hi, n in ((3, nq), (3, ng), (2, nq), (2, ng))
    ]
    q_pids, g_pids, q_cams, g_cams = labels
    max_rank = data.draw(ints(1, 15))
    chunk, run = sizes
    patches = (
        mock.patch.object(rank_module, "_CHUNK_ELEMENTS", chunk),
        mock.patch.object(kernel, "_CHUNK_ELEMENTS", chunk),
        mock.patch.object(kernel, "_RUN", run),
    )
    with patches[0], patches[1], patches[2]:
        try:
            m = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
        except MetricInputError:
            assert not any(((g_pids == p) & (g_cams != c)).any() for p, c in zip(q_pids, q_cams, strict=True))
            return
    cmc, m_ap, valid = multi_shot_reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    np.testing.assert_allclose(m.cmc, cmc, atol=1e-12)
    assert m.mAP == pytest.approx(m_ap, abs=1e-12) and m.num_valid_queries == valid


def exact_embeddings(rng, n, dim):
    """Embeddings whose inner products are exact in float32 (multiples of 1/16), with many ties."""
    return (rng.integers(-2, 3, (n, dim)) / 4).astype(np.float32)


@pytest.mark.parametrize("protocol", ["multi-shot", "single-shot"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_embeddings_equal_distance_matrix(protocol, chunk_size):
    rng = np.random.default_rng(5)
    q, g = exact_embeddings(rng, 40, 6), exact_embeddings(rng, 90, 6)
    labels = rng.integers(0, 15, 40), rng.integers(0, 15, 90), rng.integers(0, 3, 40), rng.integers(0, 3, 90)
    ref = evaluate(-(q @ g.T), *labels, protocol=protocol, max_rank=20, seed=4)
    got = evaluate_embeddings(
        torch.from_numpy(q), g, *labels, protocol=protocol, max_rank=20, seed=4, chunk_size=chunk_size
    )
    np.testing.assert_array_equal(got.cmc, ref.cmc)
    assert got.mAP == ref.mAP and got.num_valid_queries == ref.num_valid_queries


def test_tensor_and_array_inputs_agree():
    problem = random_problem(np.random.default_rng(1), 20, 60, ids=8, cams=3)
    a = evaluate(*problem)
    b = evaluate(*(torch.from_numpy(x) for x in problem))
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert a.mAP == b.mAP


def test_single_shot_one_image_per_identity_is_multi_shot_and_map_is_mrr():
    rng = np.random.default_rng(2)
    dist = rng.random((30, 25))
    g_pids, q_pids = np.arange(25), rng.integers(0, 25, 30)
    cams = np.zeros(30, int), np.ones(25, int)
    single = evaluate(dist, q_pids, g_pids, cams[0], cams[1], protocol="single-shot", max_rank=25)
    multi = evaluate(dist, q_pids, g_pids, cams[0], cams[1], max_rank=25)
    np.testing.assert_allclose(single.cmc, multi.cmc)
    first_rank = (dist < dist[np.arange(30), q_pids][:, None]).sum(1) + 1
    assert single.mAP == pytest.approx(np.mean(1 / first_rank))
    assert single.map_definition == SINGLE_SHOT_MAP and single.draws == 10


def test_single_shot_is_seeded():
    problem = random_problem(np.random.default_rng(4), 50, 200, ids=20, cams=2)
    a, b = (evaluate(*problem, protocol="single-shot", seed=7) for _ in range(2))
    c = evaluate(*problem, protocol="single-shot", seed=8)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert a.mAP == b.mAP and a.mAP != c.mAP


def test_single_shot_averages_uniform_draws():
    # 3 identities with 2 gallery images each: the mean over many draws approaches the exact mean over all
    # 8 single-shot galleries (each evaluated as a one-image-per-identity gallery).
    rng = np.random.default_rng(6)
    dist = rng.random((4, 6))
    g_pids, q_pids = np.repeat([0, 1, 2], 2), np.array([0, 1, 2, 2])
    q_cams, g_cams = np.zeros(4, int), np.ones(6, int)
    exact = [
        evaluate(dist[:, list(pick)], q_pids, g_pids[list(pick)], q_cams, g_cams[list(pick)], max_rank=3)
        for pick in itertools.product([0, 1], [2, 3], [4, 5])
    ]
    m = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol="single-shot", max_rank=3, draws=4000)
    assert m.mAP == pytest.approx(np.mean([e.mAP for e in exact]), abs=0.02)
    np.testing.assert_allclose(m.cmc, np.mean([e.cmc for e in exact], axis=0), atol=0.03)


def test_single_shot_never_draws_a_same_camera_positive():
    # the query's own identity has a near image on its camera (removed) and a far one on another camera
    dist = np.array([[0.0, 0.9, 0.5, 0.6]])
    args = ([1], [1, 1, 2, 3], [0], [0, 1, 1, 1])
    for seed in range(5):
        m = evaluate(dist, *args, protocol="single-shot", seed=seed, max_rank=3)
        assert m.mAP == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("dist", "q_pids", "message"),
    [
        (np.zeros(5), [1], "2-D"),
        (np.zeros((0, 5)), [], "empty"),
        (np.zeros((2, 5)), [1], "q_pids has shape"),
        (np.array([[0.1, np.nan, 0.2, 0.3, 0.4], [0.0] * 5]), [1, 2], "NaN"),
    ],
)
def test_bad_input_is_a_clear_value_error(dist, q_pids, message):
    with pytest.raises(ValueError, match=message):
        evaluate(dist, q_pids, G_PIDS, [0] * len(q_pids), G_CAMS)


def test_no_valid_query_explains_the_camera_rule():
    with pytest.raises(MetricInputError, match="different camids"):
        evaluate(np.zeros((2, 5)), [1, 1], G_PIDS, [0, 0], np.zeros(5, int))


@pytest.mark.parametrize("kwargs", [{"protocol": "all-shot"}, {"max_rank": 0}])
def test_bad_options(kwargs):
    with pytest.raises(MetricInputError):
        evaluate(np.zeros((1, 5)), [1], G_PIDS, [0], G_CAMS, **kwargs)


def test_embeddings_bad_input():
    q, g = np.ones((2, 4), np.float32), np.ones((5, 3), np.float32)
    with pytest.raises(MetricInputError, match="dimension"):
        evaluate_embeddings(q, g, [1, 1], G_PIDS, [0, 0], G_CAMS)
    q[0, 0] = np.inf
    with pytest.raises(MetricInputError, match="NaN or inf"):
        evaluate_embeddings(q, np.ones((5, 4), np.float32), [1, 1], G_PIDS, [0, 0], G_CAMS)


def test_evaluate_reports_minp_equal_to_the_reference_under_both_protocols() -> None:
    rng = np.random.default_rng(7)
    dist = rng.integers(0, 6, (25, 60)).astype(np.float64)  # many ties: broken by gallery order
    q_pids, g_pids = rng.integers(0, 8, 25), rng.integers(0, 8, 60)
    q_cams, g_cams = rng.integers(0, 2, 25), rng.integers(0, 3, 60)
    multi = evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    expected, valid = multi_shot_minp_reference(dist, q_pids, g_pids, q_cams, g_cams)
    assert multi.mINP == pytest.approx(expected, abs=1e-12) and multi.num_valid_queries == valid
    single = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol="single-shot", draws=4, seed=3)
    reference = single_shot_minp_reference(dist, q_pids, g_pids, q_cams, g_cams, draws=4, seed=3)
    assert single.mINP == pytest.approx(reference, abs=1e-12) and single["mINP"] == single.mAP
