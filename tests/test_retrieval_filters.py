"""Metadata filters on every backend's search: exact top-k among the entries that pass, ties in gallery order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reidx.errors import ReidxError
from reidx.gallery import BACKENDS, Gallery
from reidx.gallery.filters import NO_FILTER, Condition, GalleryFilter
from reidx.retrieval.requests import SearchRequest
from reidx.retrieval.search import rank_vectors
from tests.galleries import normalised, write_gallery

COUNT, DIM = 600, 16


@pytest.fixture(scope="module", params=BACKENDS.names())
def gallery(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Gallery:
    """600 vectors, many of them exact copies (ties), 40 pids over 6 cameras (camera 6 holds only 3), in
    each backend (Milvus: a real Milvus Lite engine, filtering by expression)."""
    rng = np.random.default_rng(0)
    base = normalised(rng.standard_normal((50, DIM)))
    vectors = base[rng.integers(0, 50, COUNT)]
    camid = rng.integers(1, 6, COUNT)
    camid[[5, 300, 599]] = 6
    metadata = pd.DataFrame({"path": [f"g{i:04d}.png" for i in range(COUNT)], "pid": rng.integers(0, 40, COUNT)})
    metadata["camid"] = camid
    root = tmp_path_factory.mktemp("filters")
    return write_gallery(root / "idx", vectors, request.param, str(root / "g.db"), metadata)


def reference(gallery: Gallery, query: np.ndarray, passes: np.ndarray, k: int) -> list[int]:
    """The unfiltered full ranking (score descending, ties by id), kept where ``passes``, first k."""
    _, ids = gallery.search(query[None], COUNT)
    return [i for i in ids[0].tolist() if passes[i]][:k]


@pytest.mark.parametrize(
    ("spec", "query_camid"),
    [
        (GalleryFilter.of(cameras=[2]), 1),
        (GalleryFilter.of(cameras=[6]), 1),
        (GalleryFilter.of(pids=[3, 7, 7]), 2),
        (GalleryFilter.of(cameras=[1, 3], pids=range(0, 40, 2)), 1),
        (GalleryFilter.of(other_cameras=True), 4),
        (GalleryFilter.of(pids=[999]), 1),
    ],
)
def test_filtered_search_is_the_exact_top_k_that_passes(gallery: Gallery, spec: GalleryFilter, query_camid: int):
    rng = np.random.default_rng(1)
    queries = normalised(rng.standard_normal((4, DIM)))
    meta = gallery.metadata
    for k in (1, 5, 25, 700):
        results = rank_vectors(
            gallery,
            queries,
            [f"q{i}" for i in range(4)],
            request=SearchRequest(k=k, filters=spec, query_camid=query_camid),
        )
        passes = spec.mask(meta, query_camid)
        for query, result in zip(queries, results, strict=True):
            expected = reference(gallery, query, passes, k)
            assert [hit.index_id for hit in result.hits] == expected
            assert [hit.rank for hit in result.hits] == list(range(1, len(expected) + 1))
    camids = {hit.camid for result in results for hit in result.hits}
    if spec.other_cameras:
        assert query_camid not in camids and len(results[0].hits) == int((meta["camid"] != query_camid).sum())
    if spec.cameras:
        assert camids <= set(spec.cameras)
    if spec.pids == (999,):
        assert all(result.hits == [] for result in results)


def test_other_cameras_follows_each_querys_name(gallery: Gallery) -> None:
    rng = np.random.default_rng(2)
    names = ["0001_c2s1_000001_00.png", "0001_c5s1_000001_00.png"]
    results = rank_vectors(
        gallery,
        normalised(rng.standard_normal((2, DIM))),
        names,
        request=SearchRequest(k=50, filters=GalleryFilter.of(other_cameras=True)),
    )
    assert [result.camid for result in results] == [2, 5]
    assert all(hit.camid != result.camid for result in results for hit in result.hits)
    assert all(len(result.hits) == 50 for result in results)
    with pytest.raises(ReidxError, match="camera of plain.png is unknown"):
        rank_vectors(
            gallery,
            normalised(rng.standard_normal((1, DIM))),
            ["plain.png"],
            request=SearchRequest(k=5, filters=GalleryFilter.of(other_cameras=True)),
        )


def test_filter_spec_conditions() -> None:
    spec = GalleryFilter.of([3, 1, 3], [5], other_cameras=True)
    assert spec.active and not NO_FILTER.active and NO_FILTER.conditions(-1) == []
    assert spec.conditions(2) == [
        Condition("camid", True, (1, 3)),
        Condition("pid", True, (5,)),
        Condition("camid", False, (2,)),
    ]
    assert spec.to_dict() == {"cameras": [1, 3], "pids": [5], "other_cameras": True}
