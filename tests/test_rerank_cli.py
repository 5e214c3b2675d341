"""`reidx embed --rerank-graph` and `reidx search --rerank / --query-expansion` through the real CLI on the tiny
gallery: the online re-ranked top-k equals the dense reference on gallery ∪ {query} for every query, --append
keeps the stored gallery part exact, and a missing, stale or damaged one is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reidx.device import Devices
from reidx.evaluation.embed import embed_paths
from reidx.gallery import open_gallery_dir
from reidx.gallery.directory import HEADER_NAME, PARTIAL_NAME, RERANK_NAME
from reidx.images import expand_images
from reidx.retrieval.expansion import average_query_expansion
from reidx.retrieval.rerank import RerankParams, graph
from reidx.retrieval.rerank.online import GalleryRerank
from reidx.retrieval.rerank.reference import rerank_dense
from reidx.retrieval.rerank.resume import KnnBlocks

#: Small k1 / k2: the 12-image gallery is then larger than a neighbour list (the online path, not the
#: whole-gallery fallback).
SMALL = ("--k1", "4", "--k2", "2")
FAST = ("--workers", "0", "--batch-size", "16")


def embed(run_cli, root: Path, out: Path, *args: str) -> None:
    code, _, err = run_cli("--device", "cpu", "embed", "--checkpoint", root / "model.pt", "--out", out, *FAST, *args)
    assert code == 0, err


def search(run_cli, idx: Path, queries, *args: str) -> tuple[int, list | None, str]:
    code, out, err = run_cli("--device", "cpu", "search", *queries, "--gallery", idx, "--json", *FAST, *args)
    return code, (json.loads(out) if code == 0 else None), err


def query_vectors(root: Path, idx: Path, queries) -> tuple[list[str], np.ndarray, np.ndarray]:
    from reidx.retrieval.search import open_gallery

    gallery, embedder = open_gallery(idx, devices=Devices("cpu"))
    paths = [str(p) for p in expand_images(queries)]
    vectors = embed_paths(embedder, paths, gallery.header.mode, 16, 0)
    return paths, vectors, np.array(gallery.exact_vectors())


def check_exact(answers: list, vectors: np.ndarray, gallery: np.ndarray, params: RerankParams, k: int) -> None:
    for answer, q in zip(answers, vectors, strict=True):
        ref = rerank_dense(np.concatenate([q[None], gallery]), 1, params)[0]
        expected = np.argsort(ref, kind="stable")[:k]
        assert answer["score_kind"] == "distance"
        assert [hit["index_id"] for hit in answer["results"]] == expected.tolist()
        np.testing.assert_allclose([hit["score"] for hit in answer["results"]], ref[expected], rtol=0, atol=1e-9)


@pytest.fixture
def split_gallery(tiny_gallery: Path, tmp_path: Path) -> Path:
    """The tiny gallery's 12 images as ``first/`` (8) and ``more/`` (4)."""
    images = sorted((tiny_gallery / "gallery").iterdir())
    for folder, part in (("first", images[:8]), ("more", images[8:])):
        (tmp_path / folder).mkdir()
        for image in part:
            shutil.copy(image, tmp_path / folder / image.name)
    return tmp_path


def test_search_rerank_equals_the_dense_reference(run_cli, tiny_gallery: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    embed(run_cli, tiny_gallery, idx, tiny_gallery / "gallery", "--rerank-graph", *SMALL)
    queries = [tiny_gallery / "queries", tiny_gallery / "gallery"]  # LR crops, and queries equal to gallery items
    code, answers, err = search(run_cli, idx, queries, "--rerank", "--top-k", "12")
    assert code == 0, err
    _, vectors, gallery = query_vectors(tiny_gallery, idx, queries)
    check_exact(answers, vectors, gallery, RerankParams(4, 2, 0.3), 12)
    code, answers, err = search(run_cli, idx, queries, "--rerank", "--top-k", "5", "--lambda", "0.6", "--k1", "4")
    assert code == 0, err
    check_exact(answers, vectors, gallery, RerankParams(4, 2, 0.6), 5)
    # the table says which score it prints
    code, out, err = run_cli("--device", "cpu", "search", tiny_gallery / "queries", "--gallery", idx, "--rerank", *FAST)
    assert code == 0 and "re-ranked: distance, lower is better" in " ".join(out.split()), err
    # refusals, one line each: other k1, --min-score on distances, filters
    for args, words in (
        (("--k1", "5"), "built with k1 4"),
        (("--min-score", "0.5"), "--min-score is a threshold on cosine similarities"),
        (("--camera", "1"), "filters"),
    ):
        code, _, err = search(run_cli, idx, queries, "--rerank", *args)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err


def test_default_parameters_and_plain_search_unchanged(run_cli, tiny_gallery: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    embed(run_cli, tiny_gallery, idx, tiny_gallery / "gallery", "--rerank-graph")  # k1 20 > the gallery
    queries = [tiny_gallery / "queries"]
    code, answers, err = search(run_cli, idx, queries, "--rerank")
    assert code == 0, err
    _, vectors, gallery = query_vectors(tiny_gallery, idx, queries)
    check_exact(answers, vectors, gallery, RerankParams(), 10)
    code, plain, err = search(run_cli, idx, queries)
    assert code == 0 and plain[0]["score_kind"] == "similarity"
    code, reference, err = search(run_cli, tiny_gallery / "idx", queries)  # the fixture's index, no graph
    assert [r["results"] for r in plain] == [r["results"] for r in reference]


def test_append_keeps_the_graph_exact(run_cli, tiny_gallery: Path, split_gallery: Path) -> None:
    idx = split_gallery / "idx"
    embed(run_cli, tiny_gallery, idx, split_gallery / "first", "--rerank-graph", *SMALL)
    embed(run_cli, tiny_gallery, idx, split_gallery / "more", "--append")  # no flag: the graph is kept, extended
    opened = open_gallery_dir(idx, Devices("cpu"))
    gallery = np.array(opened.exact_vectors())  # a view into the open index: copied while it is open
    assert len(gallery) == 12
    stored = GalleryRerank.load(idx / RERANK_NAME, gallery)
    fresh = GalleryRerank.build(gallery, RerankParams(4, 2, 0.3))
    assert stored.params == fresh.params
    for a, b in (
        (stored.graph.nn, fresh.graph.nn),
        *zip(stored.graph.v, fresh.graph.v, strict=True),
        *zip(stored.graph.qe, fresh.graph.qe, strict=True),
    ):
        np.testing.assert_array_equal(a, b)
    queries = [tiny_gallery / "queries", split_gallery / "more"]
    code, answers, err = search(run_cli, idx, queries, "--rerank", "--top-k", "12")
    assert code == 0, err
    _, vectors, _ = query_vectors(tiny_gallery, idx, queries)
    check_exact(answers, vectors, gallery, RerankParams(4, 2, 0.3), 12)


def test_missing_stale_and_damaged_graphs(run_cli, tiny_gallery: Path, split_gallery: Path) -> None:
    queries = [tiny_gallery / "queries"]
    code, _, err = search(run_cli, tiny_gallery / "idx", queries, "--rerank")
    assert code == 1 and "has no re-ranking graph" in err and "--rerank-graph" in err
    assert len(err.strip().splitlines()) == 1
    small, idx = split_gallery / "small", split_gallery / "idx"
    embed(run_cli, tiny_gallery, small, split_gallery / "first", "--rerank-graph", *SMALL)
    embed(run_cli, tiny_gallery, idx, split_gallery / "first", split_gallery / "more", "--rerank-graph", *SMALL)
    shutil.copy(small / RERANK_NAME, idx / RERANK_NAME)  # another gallery's: stale
    code, _, err = search(run_cli, idx, queries, "--rerank")
    assert code == 1 and "stale or damaged" in err and len(err.strip().splitlines()) == 1, err
    (idx / RERANK_NAME).write_bytes(b"damaged")
    code, _, err = search(run_cli, idx, queries, "--rerank")
    assert code == 1 and "stale or damaged" in err and len(err.strip().splitlines()) == 1, err
    # embed --append --rerank-graph with nothing new recomputes it (never trusts the damaged file)
    embed(run_cli, tiny_gallery, idx, split_gallery / "more", "--append", "--rerank-graph", *SMALL)
    code, answers, err = search(run_cli, idx, queries, "--rerank")
    assert code == 0, err
    _, vectors, gallery = query_vectors(tiny_gallery, idx, queries)
    check_exact(answers, vectors, gallery, RerankParams(4, 2, 0.3), 10)


def test_rerank_graph_needs_a_flat_index(run_cli, tiny_gallery: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(
        "--device", "cpu", "embed", "--checkpoint", tiny_gallery / "model.pt", tiny_gallery / "gallery",
        "--out", tmp_path / "idx", "--rerank-graph", "--index", "ivfpq", *FAST,
    )  # fmt: skip
    assert code == 1 and "flat FAISS index" in err and not (tmp_path / "idx" / RERANK_NAME).exists()


def test_query_expansion(run_cli, tiny_gallery: Path) -> None:
    queries = [tiny_gallery / "queries"]
    code, answers, err = search(run_cli, tiny_gallery / "idx", queries, "--query-expansion", "2", "--top-k", "12")
    assert code == 0, err
    _, vectors, gallery = query_vectors(tiny_gallery, tiny_gallery / "idx", queries)
    expanded = average_query_expansion(vectors, gallery, 2)
    for answer, q in zip(answers, expanded, strict=True):
        scores = gallery.astype(np.float64) @ q.astype(np.float64)
        assert [hit["index_id"] for hit in answer["results"]] == np.lexsort((np.arange(12), -scores)).tolist()


def test_serve_rerank_answers_what_search_rerank_json_does(run_cli, tiny_gallery: Path, tmp_path: Path) -> None:
    import httpx

    from reidx.retrieval.search import open_gallery
    from reidx.service.app import create_app
    from tests.servers import serving

    idx = tmp_path / "idx"
    embed(run_cli, tiny_gallery, idx, tiny_gallery / "gallery", "--rerank-graph", *SMALL)
    paths = sorted((tiny_gallery / "queries").glob("*.png"))
    code, answers, err = search(run_cli, idx, paths, "--rerank", "--top-k", "7", "--lambda", "0.5")
    assert code == 0, err
    gallery, model = open_gallery(idx, devices=Devices("cpu"))
    with serving(create_app(gallery, model, min_score=0.5)) as url:
        files = [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]
        data = {"top_k": "7", "rerank": "true", "lambda": "0.5"}
        served = httpx.post(f"{url}/search", files=files, data=data, timeout=60)
        assert served.status_code == 200, served.text
        # the server's default threshold is one on similarities: it does not apply to distances
        assert [{**a, "query": Path(a["query"]).name} for a in answers] == served.json()
        refused = httpx.post(f"{url}/search", files=files, data={**data, "min_score": "0.2"}, timeout=60)
        assert refused.status_code == 400 and "cosine similarities" in refused.json()["error"]
        plain = httpx.post(f"{url}/search", files=files, data={"top_k": "7"}, timeout=60).json()
        assert plain[0]["score_kind"] == "similarity" and plain[0]["min_score"] == 0.5


def test_an_interrupted_graph_build_resumes_its_knn_pass(run_cli, tiny_gallery: Path, tmp_path: Path, monkeypatch):
    """embed --rerank-graph stopped in the k-NN pass (after 2 of its 3 blocks): the same command searches only
    the third block, keeps the other two, and writes the graph an uninterrupted build gives."""
    monkeypatch.setattr(graph, "QUERY_BLOCK", 4)  # 12 images: 3 blocks
    searched: list[int] = []
    keep, stop = KnnBlocks.save, [True]

    def save(self: KnnBlocks, first: int, found) -> None:
        if stop[0] and first == 8:
            raise KeyboardInterrupt
        searched.append(first)
        keep(self, first, found)

    monkeypatch.setattr(KnnBlocks, "save", save)
    idx = tmp_path / "idx"
    args = ("--device", "cpu", "embed", "--checkpoint", tiny_gallery / "model.pt", "--out", idx, *FAST)
    code, _, err = run_cli(*args, tiny_gallery / "gallery", "--rerank-graph", *SMALL)
    assert code == 130 and not (idx / HEADER_NAME).exists()
    kept = sorted((idx / PARTIAL_NAME).glob("knn-*.npz"))
    assert searched == [0, 4] and len(kept) == 2
    kept[1].write_bytes(kept[1].read_bytes()[:-3] + b"xyz")  # a damaged block is searched again
    searched.clear()
    stop[0] = False
    code, _, err = run_cli(*args, tiny_gallery / "gallery", "--rerank-graph", *SMALL)
    assert code == 0, err
    assert searched == [4, 8] and not (idx / PARTIAL_NAME).exists()
    stored = np.load(idx / RERANK_NAME, allow_pickle=False)
    gallery = open_gallery_dir(idx)  # held while its vectors are copied
    vectors = np.array(gallery.exact_vectors())
    fresh = GalleryRerank.build(vectors, RerankParams(4, 2, 0.3))
    np.testing.assert_array_equal(stored["nn"], fresh.graph.nn)
    np.testing.assert_array_equal(stored["qe_vals"], fresh.graph.qe[2])
