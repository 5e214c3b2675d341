"""Open-set thresholds: hand-computed cases, a per-query brute-force oracle on random scores with ties (both
score kinds, dense and blocked), re-ranked distances, the protocol's same-camera removal, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from reidx.metrics import evaluate
from reidx.metrics.checks import MetricInputError
from reidx.metrics.open_set import DEFAULT_FMRS, best_impostors, open_set, open_set_blocks
from reidx.report.scoring import Scoring, open_set_points
from reidx.retrieval.expansion import average_query_expansion, left_out_expansion
from reidx.retrieval.rerank import RerankParams, rerank
from reidx.retrieval.rerank.reference import left_out_dense

# 4 queries, 5 gallery entries. q0 (pid 1, cam 0): g0 is its pid on its camera, so removed despite 0.9; its
# true match g1 (0.8) beats the best impostor g3 (0.5). q1: true 0.64 beats impostor 0.63. q2 (pid 3) has no
# true match: impostor trial only (0.66). q3: impostor 0.62 beats its true match 0.6, so it is never matched.
# Impostor scores, best first: 0.66, 0.63, 0.62, 0.5.
HAND = np.array(
    [
        [0.9, 0.8, 0.3, 0.5, 0.1],
        [0.2, 0.6, 0.64, 0.63, 0.0],
        [0.4, 0.3, 0.2, 0.66, 0.45],
        [0.1, 0.2, 0.3, 0.6, 0.62],
    ]
)
HAND_LABELS = ([1, 2, 3, 4], [1, 1, 2, 4, 5], [0, 0, 0, 0], [0, 1, 1, 1, 1])


def test_hand_computed_similarities():
    result = open_set(HAND, *HAND_LABELS, kind="similarity", fmrs=(0.01, 0.25, 0.5))
    assert (result.num_genuine, result.num_impostor, result.num_queries) == (3, 4, 4)
    assert result.rank1 == pytest.approx(2 / 3)
    up = [np.nextafter(v, np.inf) for v in (0.66, 0.63, 0.62)]  # just above the 1st, 2nd, 3rd impostor
    assert [p.threshold for p in result.points] == up
    assert [p.fmr for p in result.points] == [0.0, 0.25, 0.5]
    assert [p.tmr for p in result.points] == pytest.approx([1 / 3, 2 / 3, 2 / 3])  # q1's 0.64 passes from 0.63


def test_hand_computed_distances():
    dist = 1 - HAND
    result = open_set(dist, *HAND_LABELS, kind="distance", fmrs=(0.01, 0.25, 0.5))
    assert result.rank1 == pytest.approx(2 / 3)
    assert [p.threshold for p in result.points] == [
        np.nextafter(dist[r, c], -np.inf) for r, c in [(2, 3), (1, 3), (3, 4)]
    ]
    assert [p.fmr for p in result.points] == [0.0, 0.25, 0.5]
    assert [p.tmr for p in result.points] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    record = result.to_dict()
    assert record["passes"] == "score <= threshold" and len(record["points"]) == 3
    assert record["points"][1] == {
        "target_fmr": 0.25,
        "threshold": result.points[1].threshold,
        "fmr": 0.25,
        "tmr": 2 / 3,
    }


def test_a_tie_goes_to_the_earlier_gallery_entry():
    scores = np.array([[0.7, 0.7, 0.1], [0.2, 0.7, 0.7]])
    # q0: its true match g0 ties impostor g1 and comes first; q1: its true match g2 ties impostor g1, second
    result = open_set(scores, [1, 3], [1, 2, 3], [0, 0], [1, 1, 1], kind="similarity")
    assert result.rank1 == 0.5
    assert result.num_impostor == 2


def test_the_default_rates_and_a_threshold_at_an_exact_rate():
    rng = np.random.default_rng(0)
    scores = rng.random((100, 30)).astype(np.float32)
    result = open_set(
        scores, np.arange(100) % 10, np.arange(30) % 10, np.zeros(100, int), np.ones(30, int), kind="similarity"
    )
    assert [p.target_fmr for p in result.points] == list(DEFAULT_FMRS)
    # 100 impostor trials, distinct scores: exactly 1, 5 and 10 false matches; float32 thresholds
    assert [p.fmr for p in result.points] == [0.01, 0.05, 0.10]
    assert all(np.float32(p.threshold) == p.threshold for p in result.points)
    # 0.29 * 100 rounds to 28.999...: the threshold still admits 29 of 100
    assert (
        open_set(
            scores,
            np.arange(100) % 10,
            np.arange(30) % 10,
            np.zeros(100, int),
            np.ones(30, int),
            kind="similarity",
            fmrs=[0.29],
        )
        .points[0]
        .fmr
        == 0.29
    )


def oracle(matrix, q_pids, g_pids, q_cams, g_cams, kind, fmrs):
    """Per query, the definitions read literally: sort the row (stable), drop same pid + camid, rank-1; drop the
    identity, best remaining score. Per rate, try every candidate threshold (each impostor score's neighbour on
    its rejected side) and keep the most permissive with FMR <= rate."""
    higher = kind == "similarity"

    def passes(x, t):
        return x >= t if higher else x <= t

    genuine, impostors = [], []
    for i, row in enumerate(matrix):
        valid = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        ranked = [j for j in np.argsort(-row if higher else row, kind="stable") if valid[j]]
        if any(g_pids[j] == q_pids[i] for j in ranked):
            genuine.append((g_pids[ranked[0]] == q_pids[i], row[ranked[0]]))
        others = row[g_pids != q_pids[i]]
        if len(others):
            impostors.append(others.max() if higher else others.min())
    impostors = np.array(impostors, dtype=matrix.dtype)
    points = []
    for rate in fmrs:
        candidates = [np.nextafter(v, matrix.dtype.type(np.inf if higher else -np.inf)) for v in impostors]
        allowed = [t for t in candidates if np.mean(passes(impostors, t)) <= rate]
        t = min(allowed) if higher else max(allowed)
        tmr = np.mean([bool(ok and passes(s, t)) for ok, s in genuine])
        points.append((float(t), float(np.mean(passes(impostors, t))), float(tmr)))
    return points, float(np.mean([ok for ok, _ in genuine])), len(genuine), len(impostors)


def random_case(seed: int, queries: int = 60, gallery: int = 90, levels: int | None = None):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(1, 15, queries), rng.integers(0, 12, gallery)  # pids 12-14 not in gallery
    q_cams, g_cams = rng.integers(0, 3, queries), rng.integers(0, 3, gallery)
    scores = 0.5 * rng.random((queries, gallery)) + 0.5 * rng.random((queries, 1))  # impostor maxima spread
    scores += 0.3 * rng.random((queries, gallery)) * (q_pids[:, None] == g_pids)
    if levels:  # many exact ties
        scores = np.floor(scores * levels) / levels
    return scores.astype(np.float32 if seed % 2 else np.float64), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["similarity", "distance"])
@pytest.mark.parametrize("levels", [None, 5, 40])
def test_random_scores_equal_the_oracle(seed, kind, levels):
    scores, *labels = random_case(seed, levels=levels)
    fmrs = (0.01, 0.05, 0.10, 0.3, 0.5)
    result = open_set(scores, *labels, kind=kind, fmrs=fmrs)
    points, rank1, genuine, impostor = oracle(scores, *labels, kind, fmrs)
    assert [(p.threshold, p.fmr, p.tmr) for p in result.points] == points  # exact: same floats, same counts
    assert (result.rank1, result.num_genuine, result.num_impostor) == (pytest.approx(rank1), genuine, impostor)
    dist = scores if kind == "distance" else -scores.astype(np.float64)
    assert result.rank1 == pytest.approx(evaluate(dist, *labels, max_rank=1).cmc[0])  # the same protocol


def test_blocks_equal_the_dense_matrix():
    scores, *labels = random_case(1, queries=50, levels=7)
    dense = open_set(scores, *labels, kind="distance")
    cuts = [0, 1, 8, 9, 30, 50]
    blocks = [(a, scores[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert open_set_blocks(iter(blocks), scores.shape, *labels, kind="distance") == dense


def clustered_case(seed: int, items: int, classes: int, dim: int, noise: float):
    """Unit vectors around ``classes`` centres, two cameras; the first 40 are the queries:
    ``(queries, gallery, (q_pids, g_pids, q_camids, g_camids))``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    pids = rng.integers(0, classes, items)
    x = centres[pids] + noise * rng.standard_normal((items, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cams = rng.integers(0, 2, items)
    return x[:40], x[40:], (pids[:40], pids[40:], cams[:40], cams[40:])


def test_reranked_distances_blocked_equal_the_oracle():
    q, g, labels = clustered_case(2, 240, 20, 12, 0.5)
    reranked = rerank(q, g, RerankParams(6, 3, 0.3))
    result = open_set_blocks(reranked.blocks(rows=7), (40, 200), *labels, kind="distance")
    dense = np.concatenate([rows for _, rows in reranked.blocks(rows=7)])
    points, rank1, _, _ = oracle(dense, *labels, "distance", DEFAULT_FMRS)
    assert [(p.threshold, p.fmr, p.tmr) for p in result.points] == points
    assert result.rank1 == pytest.approx(rank1)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kind": "cosine"}, "unknown score kind"),
        ({"fmrs": [0.0]}, "strictly between 0 and 1"),
        ({"fmrs": [1.0]}, "strictly between 0 and 1"),
        ({"fmrs": []}, "strictly between 0 and 1"),
        ({"q_pids": [1, 2]}, "q_pids has shape"),
        ({"scores": np.full((4, 5), np.nan)}, "NaN"),
        ({"scores": np.full((4, 5), np.inf)}, "inf"),
        ({"q_pids": [9, 9, 9, 9]}, "none of the 4 queries has a true match"),
        ({"q_pids": [5, 5, 5, 5], "g_pids": [5] * 5, "g_camids": [1] * 5}, "no impostor score"),
    ],
)
def test_bad_input_is_one_line(change, words):
    args = {"scores": HAND, "q_pids": HAND_LABELS[0], "g_pids": HAND_LABELS[1], "q_camids": HAND_LABELS[2]}
    args |= {"g_camids": HAND_LABELS[3], "kind": "similarity"} | change
    with pytest.raises(MetricInputError, match=words) as info:
        open_set(**args)
    assert "\n" not in info.value.line()


def test_blocks_that_do_not_tile_the_matrix_are_refused():
    with pytest.raises(MetricInputError, match="consecutive blocks"):
        open_set_blocks([(0, HAND[:2]), (3, HAND[3:])], HAND.shape, *HAND_LABELS, kind="similarity")
    with pytest.raises(MetricInputError, match="cover 2 of 4"):
        open_set_blocks([(0, HAND[:2])], HAND.shape, *HAND_LABELS, kind="similarity")


@pytest.mark.parametrize("kind", ["similarity", "distance"])
def test_impostors_read_from_the_matrix_and_given_apart_agree(kind):
    scores, *labels = random_case(4, levels=9)
    blocks = ((s, scores[s : s + 7]) for s in range(0, len(scores), 7))
    impostors = best_impostors(blocks, scores.shape, labels[0], labels[1], kind=kind)
    expected = [
        r[labels[1] != p].max() if kind == "similarity" else r[labels[1] != p].min()
        for r, p in zip(scores, labels[0], strict=True)
    ]
    np.testing.assert_array_equal(impostors, expected)
    assert open_set(scores, *labels, kind=kind, impostors=impostors) == open_set(scores, *labels, kind=kind)
    shift = 0.2 if kind == "similarity" else -0.2  # every impostor closer: the thresholds move with them
    moved = open_set(scores, *labels, kind=kind, impostors=impostors + shift).points
    base = open_set(scores, *labels, kind=kind).points
    assert [p.threshold for p in moved] == pytest.approx([p.threshold + shift for p in base], abs=1e-9)
    with pytest.raises(MetricInputError, match="impostors has shape"):
        open_set(scores, *labels, kind=kind, impostors=impostors[:-1])
    with pytest.raises(MetricInputError, match="NaN where"):
        open_set(HAND, *HAND_LABELS, kind="similarity", impostors=np.full(4, np.nan))


def test_reranked_and_aqe_impostors_leave_the_identity_out():
    """The report's open-set points of re-ranked and AQE scores equal the oracle fed with impostor scores
    computed on the gallery without each query's identity (dense re-ranking, one pid at a time)."""
    q, g, labels = clustered_case(6, 160, 12, 10, 0.7)
    params = RerankParams(6, 3, 0.3)
    result = open_set_points(Scoring(rerank=params), q, g, labels)
    full = dense_rows(rerank(q, g, params))
    impostors = left_out_dense(q, g, labels[0], labels[1], params)
    assert result == open_set(full, *labels, kind="distance", impostors=impostors)
    assert result != open_set(full, *labels, kind="distance")  # the identity-present shortcut differs
    aqe = open_set_points(Scoring(expansion=2), q, g, labels)
    alone = left_out_expansion(q, g, labels[0], labels[1], 2)
    own = labels[1] == labels[0][:, None]
    expected = open_set(
        average_query_expansion(q, g, 2) @ g.T,
        *labels,
        kind="similarity",
        impostors=np.where(own, -np.inf, alone @ g.T).max(1),
    )
    assert aqe == expected


def dense_rows(reranked) -> np.ndarray:
    return np.concatenate([rows for _, rows in reranked.blocks(rows=7)])
