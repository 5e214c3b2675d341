"""k-reciprocal re-ranking: the sparse batch form and the exact online form against the dense reference
(the published algorithm written literally), ties, duplicates, small classes, append, storage, memory, and
mINP in the ranking kernel against its per-query definition."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from reidx.errors import ReidxError
from reidx.metrics import _rank_kernel as kernel
from reidx.metrics import evaluate
from reidx.metrics.reference import multi_shot_minp_reference, single_shot_minp_reference
from reidx.retrieval.rerank import RerankParams, rerank
from reidx.retrieval.rerank.left_out import left_out_distances
from reidx.retrieval.rerank.online import GalleryRerank, _Query
from reidx.retrieval.rerank.reference import left_out_dense, rerank_dense

PARAMS = [RerankParams(), RerankParams(5, 1, 0.5), RerankParams(7, 30, 0.1), RerankParams(3, 2, 0.3)]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, classes: int, noise: float = 0.4):
    centres = rng.standard_normal((classes, dim))
    labels = rng.integers(0, classes, n)
    return unit(centres[labels] + noise * rng.standard_normal((n, dim))), labels


def dense_rows(reranked) -> np.ndarray:
    return np.concatenate([rows for _, rows in reranked.blocks(rows=7)])


def check_batch(x: np.ndarray, queries: int, params: RerankParams) -> None:
    ref = rerank_dense(x, queries, params)
    ours = dense_rows(rerank(x[:queries], x[queries:], params))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    assert (np.argsort(ours, 1, kind="stable") == np.argsort(ref, 1, kind="stable")).all()


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_batch_equals_the_dense_reference(kind, params):
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((300, 24))) if kind == "random" else clustered(rng, 300, 24, 25)[0]
    check_batch(x, 50, params)


def test_batch_metrics_equal_the_reference_metrics():
    rng = np.random.default_rng(1)
    x, labels = clustered(rng, 360, 16, 40, noise=0.6)
    cams = rng.integers(0, 3, len(x))
    queries = 60
    ref = rerank_dense(x, queries, RerankParams())
    ours = dense_rows(rerank(x[:queries], x[queries:]))
    args = (labels[:queries], labels[queries:], cams[:queries], cams[queries:])
    for protocol in ("multi-shot", "single-shot"):
        a, b = evaluate(ours, *args, protocol=protocol), evaluate(ref, *args, protocol=protocol)
        assert (a.cmc == b.cmc).all() and a.mAP == b.mAP
    gallery = kernel.Gallery.build(labels[queries:], cams[queries:])
    inp_ours = kernel.multi_shot(ours, labels[:queries], cams[:queries], gallery)[2]
    inp_ref = kernel.multi_shot(ref, labels[:queries], cams[:queries], gallery)[2]
    assert (inp_ours == inp_ref).all()
    plain = evaluate(-(x[:queries] @ x[queries:].T), *args)
    assert evaluate(ours, *args).mAP != plain.mAP  # re-ranking does change the ranking


def test_ties_duplicates_small_classes_and_queries_equal_to_gallery_items():
    rng = np.random.default_rng(2)
    x, _ = clustered(rng, 150, 8, 50, noise=0.3)  # about 3 per class: k1 = 20 is larger than a class
    x = np.concatenate([x[:40], x, x[50:60], x[:3]])  # queries equal to gallery items; duplicates
    for params in PARAMS:
        check_batch(x, 40, params)


def test_fewer_items_than_k1():
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((9, 5)))
    check_batch(x, 3, RerankParams())
    check_batch(x, 1, RerankParams(k1=4, k2=12))


def online_cases(rng, x, count):
    """Queries: near a class, equal to a gallery item, and far from everything (outliers), in turn."""
    for i in range(count):
        if i % 3 == 0:
            yield unit(x[rng.integers(len(x))] + 0.3 * rng.standard_normal(x.shape[1]))
        elif i % 3 == 1:
            yield x[rng.integers(len(x))]
        else:
            yield unit(rng.standard_normal(x.shape[1]))


def check_online(gallery: GalleryRerank, q: np.ndarray, k: int) -> None:
    ids, dist = gallery.query(q, k)
    ref = rerank_dense(np.concatenate([q[None], gallery.vectors]), 1, gallery.params)[0]
    expected = np.argsort(ref, kind="stable")[:k]
    assert (ids == expected).all()
    np.testing.assert_allclose(dist, ref[expected], rtol=0, atol=1e-9)


@pytest.mark.parametrize("params", PARAMS[:3])
def test_online_equals_the_dense_reference_on_gallery_and_query(params):
    rng = np.random.default_rng(4)
    x, _ = clustered(rng, 260, 12, 30)
    x = np.concatenate([x, x[:20]])  # duplicates: ties between gallery items and with the query
    gallery = GalleryRerank.build(x, params)
    entered = refreshed = renormalised = 0
    for q in online_cases(rng, x, 24):
        check_online(gallery, q, 15)
        state = _Query(gallery, q)
        entered += len(state.a_ids)
        refreshed += len(state.p_ids)
        renormalised += len(state.m_ids)
    # the query did enter gallery items' lists, change their R* and become their farthest item
    assert entered and refreshed and renormalised


def test_online_on_a_tiny_gallery_and_with_ties():
    rng = np.random.default_rng(5)
    tiny = GalleryRerank.build(unit(rng.standard_normal((12, 6))))
    for q in online_cases(rng, tiny.vectors, 6):
        check_online(tiny, q, 20)
    quarters = unit(np.round(clustered(rng, 120, 6, 10)[0] * 2) / 2 + 1e-9)  # many equal similarities
    gallery = GalleryRerank.build(quarters, RerankParams(6, 3, 0.3))
    for q in online_cases(rng, quarters, 12):
        check_online(gallery, q, 25)


def test_append_equals_building_at_once_and_stays_exact():
    rng = np.random.default_rng(6)
    x, _ = clustered(rng, 240, 10, 30)
    x = np.concatenate([x, x[:5]])
    grown = GalleryRerank.build(x[:170]).append(x[170:200]).append(x[200:])
    whole = GalleryRerank.build(x)
    for a, b in (
        (grown.graph.nn, whole.graph.nn),
        (grown.graph.far, whole.graph.far),
        *zip(grown.graph.qe, whole.graph.qe, strict=True),
    ):
        np.testing.assert_array_equal(a, b)
    for q in online_cases(rng, x, 6):
        check_online(grown, q, 10)


def test_save_and_load(tmp_path):
    rng = np.random.default_rng(7)
    x, _ = clustered(rng, 120, 8, 12)
    gallery = GalleryRerank.build(x, RerankParams(10, 4, 0.2))
    path = tmp_path / "rerank.npz"
    gallery.save(path)
    loaded = GalleryRerank.load(path, x)
    assert loaded.params == gallery.params
    q = unit(x[3] + 0.01)
    assert all((a == b).all() for a, b in zip(loaded.query(q, 10), gallery.query(q, 10), strict=True))
    with pytest.raises(ReidxError, match="other embeddings"):
        GalleryRerank.load(path, x[::-1])
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(ReidxError, match="junk.npz"):
        GalleryRerank.load(tmp_path / "junk.npz", x)


@pytest.mark.slow
def test_never_allocates_items_by_items():
    """20,000 items: items x items float32 would be 1.6 GB; numpy's peak allocation stays under a quarter of
    that (so not even an items x items bool array is ever made)."""
    rng = np.random.default_rng(8)
    n = 20_000
    x, _ = clustered(rng, n, 8, 2_000, noise=0.5)
    limit = n * n * 4 // 4
    tracemalloc.start()
    try:
        reranked = rerank(x[:2_000], x[2_000:])
        first = reranked.rows(0, 256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert first.shape == (256, n - 2_000) and np.isfinite(first).all()
    assert peak < limit, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("seed", range(4))
def test_minp_kernel_equals_its_definition(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        nq, ng = rng.integers(1, 8), rng.integers(1, 14)
        dist = rng.integers(-3, 4, (nq, ng)).astype(np.float32)  # many ties
        q_pids, g_pids = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
        q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
        gallery = kernel.Gallery.build(g_pids, g_cams)
        first, _, inp = kernel.multi_shot(dist, q_pids, q_cams, gallery)
        valid = first[0] >= 0
        if not valid.any():
            continue
        m_inp, count = multi_shot_minp_reference(dist, q_pids, g_pids, q_cams, g_cams)
        assert inp[0][valid].mean() == pytest.approx(m_inp, abs=1e-12) and count == valid.sum()
        first, ap, inp = kernel.single_shot(dist, q_pids, q_cams, gallery, kernel.Draws.build(g_pids, 4, seed))
        expected = single_shot_minp_reference(dist, q_pids, g_pids, q_cams, g_cams, draws=4, seed=seed)
        assert inp[first >= 0].mean() == pytest.approx(expected, abs=1e-12)


def test_minp_hand_worked():
    # gallery ranked by distance: match, other, match, other, match -> INP = 3 / 5
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([1, 1, 1, 1, 1])
    inp = kernel.multi_shot(dist, np.array([1]), np.array([0]), kernel.Gallery.build(g_pids, g_cams))[2]
    assert inp[0, 0] == pytest.approx(3 / 5)
    assert multi_shot_minp_reference(dist, [1], g_pids, [0], g_cams) == (pytest.approx(3 / 5), 1)


def shared_data(name: str) -> Path | None:
    """``shared/data/NAME`` or ``shared/weights/NAME`` beside the repository or above it, else None."""
    for folder in Path(__file__).resolve().parents:
        for kind in ("data", "weights"):
            if (folder / "shared" / kind / name).exists():
                return folder / "shared" / kind / name
    return None


VIPER, MOBILENET = shared_data("VIPeR"), shared_data("mobilenet_v2-b0353104.pth")


@pytest.mark.slow
@pytest.mark.skipif(VIPER is None or MOBILENET is None, reason="shared VIPeR images or MobileNetV2 weights absent")
def test_real_viper_embeddings():
    """Real embeddings: VIPeR's 632 + 632 images (read in place) through the ImageNet MobileNetV2 trunk (no
    trained re-ID checkpoint is shared, so not a re-ID model's), cam_a as queries, cam_b as gallery."""
    import torch
    from PIL import Image

    from reidx.models.backbones import build_backbone

    trunk = build_backbone("mobilenet_v2", pretrained=MOBILENET, input_norm="imagenet").eval()
    sets = []
    for camera in ("cam_a", "cam_b"):
        paths = sorted((VIPER / camera).glob("*.bmp"))
        pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 64))) for p in paths])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            sets.append(unit(trunk(images)[-1].mean((2, 3)).numpy()))
    queries, gallery = sets
    pids = np.arange(len(queries))
    x = np.concatenate([queries, gallery])
    ref = rerank_dense(x, len(queries), blas=True)
    ours = dense_rows(rerank(queries, gallery))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    args = (pids, pids, np.zeros_like(pids), np.ones_like(pids))
    for protocol in ("multi-shot", "single-shot"):
        a, b = evaluate(ours, *args, protocol=protocol), evaluate(ref, *args, protocol=protocol)
        assert (a.cmc == b.cmc).all() and a.mAP == b.mAP
    gallery_part = kernel.Gallery.build(pids, np.ones_like(pids))
    inp = [kernel.multi_shot(d, pids, np.zeros_like(pids), gallery_part)[2] for d in (ours, ref)]
    assert (inp[0] == inp[1]).all()
    online = GalleryRerank.build(gallery)
    for q in queries[:: len(queries) // 4]:
        check_online(online, q, 20)


def test_bad_embeddings_are_refused_in_one_line():
    rng = np.random.default_rng(9)
    x = unit(rng.standard_normal((30, 4)))
    gallery = GalleryRerank.build(x)
    for call, fix in (
        (lambda: rerank(x[:3] * 2, x[3:]), "normalise"),
        (lambda: rerank(x[:3, :3], x[3:]), "(count, 4)"),
        (lambda: gallery.query(np.full(4, np.nan), 5), "normalise"),
        (lambda: gallery.query(x[0, :3], 5), "(count, 4)"),
        (lambda: gallery.append(x[:2] * 3), "normalise"),
    ):
        with pytest.raises(ReidxError, match=re.escape(fix)) as caught:
            call()
        assert "\n" not in caught.value.line()


@pytest.mark.parametrize("params", PARAMS)
def test_left_out_distances_equal_the_dense_reference_per_identity(params):
    """Impostor scores: each identity's gallery items removed and the graph re-ranked without them. Small
    classes (k1 larger than a class), duplicates, a query equal to a gallery item, a query identity absent from
    the gallery, and one that fills the gallery (NaN)."""
    rng = np.random.default_rng(11)
    x, labels = clustered(rng, 140, 10, 30, noise=0.5)
    x[[5, 70]], x[41] = x[[60, 71]], x[100]  # query 5 equals gallery item 30 (x[60]); duplicates
    queries, q_pids, g_pids = 30, labels[:30].copy(), labels[30:]
    q_pids[0] = 99  # an identity with no gallery item: its graph is the full one
    calls: list[tuple[int, int]] = []
    ours = left_out_distances(x[:queries], x[queries:], q_pids, g_pids, params, lambda *a: calls.append(a))
    graphs = len(set(q_pids) & set(g_pids)) + 1  # one per identity in the gallery, one for those not in it
    assert calls == [(i, graphs) for i in range(1, graphs + 1)]
    ref = left_out_dense(x[:queries], x[queries:], q_pids, g_pids, params)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    full = dense_rows(rerank(x[:queries], x[queries:], params))
    assert ours[0] == pytest.approx(full[0].min(), abs=1e-12)
    assert (np.abs(ours - np.where(g_pids == q_pids[:, None], np.inf, full).min(1)) > 1e-6).any()  # not the shortcut
    alone = left_out_distances(x[:4], x[30:34], [7, 7, 8, 8], [7, 7, 7, 7], params)  # pid 7 fills the gallery
    assert np.isnan(alone[:2]).all() and np.isfinite(alone[2:]).all()
