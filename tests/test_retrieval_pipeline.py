"""embed + search end to end with tiny untrained models: ranking, append, resume, montage, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reidx.checkpoint import save_checkpoint
from reidx.cli import app
from reidx.data.manifest import DatasetInfo, write_dataset
from reidx.errors import ReidxError
from reidx.gallery import IndexSpec, open_gallery_dir
from reidx.gallery.directory import HEADER_NAME, METADATA_NAME, PARTIAL_NAME
from reidx.gallery.faiss import INDEX_NAME
from reidx.io import sha256_file
from reidx.models import build_model
from reidx.models.loading import load_model
from reidx.retrieval import (
    build_index,
    embed_paths,
    gallery_table,
    images_table,
    search_images,
)
from reidx.retrieval.requests import EmbedJob, SearchRequest

INPUT_SIZE = (64, 32)
IDS, CAMERAS = 8, 3


def random_person(path: Path, rng: np.random.Generator, size: tuple[int, int] = INPUT_SIZE) -> Path:
    """A blocky random-colour image of ``size`` (H, W)."""
    blocks = (rng.random((4, 2, 3)) * 255).astype(np.uint8)
    Image.fromarray(blocks).resize(size[::-1], Image.NEAREST).save(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints (cadnet, baseline), a 24-image Market-named gallery, two new images, an LR crop."""
    root = tmp_path_factory.mktemp("retrieval")
    torch.manual_seed(0)
    save_checkpoint(
        root / "cadnet.pt", build_model("cadnet", num_classes=5, arch="resnet18", discriminator_width=8), INPUT_SIZE
    )
    save_checkpoint(root / "baseline.pt", build_model("baseline", num_classes=5, arch="resnet18"), INPUT_SIZE)
    rng = np.random.default_rng(0)
    for folder in ("gallery", "new"):
        (root / folder).mkdir()
    for pid in range(1, IDS + 1):
        for cam in range(1, CAMERAS + 1):
            random_person(root / "gallery" / f"{pid:04d}_c{cam}s1_000001_00.png", rng, (64 + 8 * cam, 32))
    for pid in (21, 22):
        random_person(root / "new" / f"{pid:04d}_c1s1_000001_00.png", rng)
    image = Image.open(root / "gallery" / "0003_c2s1_000001_00.png")
    image.resize((8, 16), Image.BICUBIC).save(root / "0003_c1s9_lowres.png")
    (root / "notes.jpg").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def cadnet(workspace: Path):
    return load_model(workspace / "cadnet.pt")


@pytest.fixture(scope="module")
def index_dir(workspace: Path, cadnet) -> Path:
    """A flat cadnet/fused index of the gallery folder (treat as read-only: copy before changing it)."""
    build_index(cadnet, images_table([workspace / "gallery"]), workspace / "idx", job=EmbedJob(batch_size=8, workers=0))
    return workspace / "idx"


def copy_index(index_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(index_dir, tmp_path / "idx"))


def file_hashes(directory: Path) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in (HEADER_NAME, INDEX_NAME, METADATA_NAME)}


def gallery_paths(workspace: Path) -> list[str]:
    return [str(p) for p in sorted((workspace / "gallery").glob("*.png"))]


def test_index_directory_layout(index_dir: Path, cadnet) -> None:
    header = json.loads((index_dir / HEADER_NAME).read_text())
    assert header["fingerprint"] == {"checkpoint_sha256": cadnet.fingerprint, "mode": "fused", "input_size": [64, 32]}
    assert header["count"] == IDS * CAMERAS and header["metric"] == "inner_product" and header["index_type"] == "flat"
    assert header["dim"] == 1024 and header["model"] == "cadnet"  # resnet18: [f, g] = 512 + 512
    metadata = pd.read_parquet(index_dir / METADATA_NAME)
    assert metadata.loc[0, ["pid", "camid"]].tolist() == [1, 1]  # 0001_c1...: camid as written
    assert not (index_dir / PARTIAL_NAME).exists()


def test_own_image_comes_back_first(workspace: Path, index_dir: Path, cadnet) -> None:
    gallery = open_gallery_dir(index_dir)
    queries = gallery_paths(workspace)[::5]
    results = search_images(gallery, cadnet, queries, request=SearchRequest(k=5), job=EmbedJob(batch_size=2, workers=2))
    for query, result in zip(queries, results, strict=True):
        assert result.hits[0].path == query and result.hits[0].score >= 0.999
        assert result.hits[0].pid == result.pid and len(result.hits) == 5


def test_ranking_equals_torch_matmul_topk(workspace: Path, index_dir: Path, cadnet) -> None:
    gallery = open_gallery_dir(index_dir)
    vectors = embed_paths(cadnet, list(gallery.metadata["path"]), batch_size=5, workers=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(gallery.index.reconstruct_n(0, len(gallery)), vectors, atol=1e-6)
    queries = embed_paths(cadnet, [str(workspace / "0003_c1s9_lowres.png"), *gallery_paths(workspace)[:3]])
    scores, ids = gallery.search(queries, len(gallery))
    similarity = torch.from_numpy(queries) @ torch.from_numpy(vectors).T
    expected_scores, expected_ids = torch.topk(similarity, len(gallery))
    np.testing.assert_array_equal(ids, expected_ids.numpy())
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-5)


def test_mode_is_checked_and_used(workspace: Path, tmp_path: Path, cadnet) -> None:
    baseline = load_model(workspace / "baseline.pt")
    with pytest.raises(ReidxError, match="no 'g' embedding"):
        build_index(baseline, images_table([workspace / "new"]), tmp_path / "b", mode="g")
    result = build_index(
        cadnet, images_table([workspace / "gallery"]), tmp_path / "g", mode="g", job=EmbedJob(workers=0)
    )
    assert result.header.mode == "g" and result.header.dim == 512
    query = gallery_paths(workspace)[7]
    hit = search_images(
        open_gallery_dir(tmp_path / "g"), cadnet, [query], request=SearchRequest(k=1), job=EmbedJob(workers=0)
    )[0].hits[0]
    assert hit.path == query and hit.score >= 0.999


def test_append_adds_only_new_paths(workspace: Path, index_dir: Path, tmp_path: Path, cadnet) -> None:
    directory = copy_index(index_dir, tmp_path)
    table = images_table([workspace / "new", *gallery_paths(workspace)[:4]])
    result = build_index(cadnet, table, directory, append=True, job=EmbedJob(workers=0))
    assert (result.added, result.skipped, result.header.count) == (2, 4, IDS * CAMERAS + 2)
    gallery = open_gallery_dir(directory)
    assert gallery.metadata["path"].is_unique and len(gallery.metadata) == gallery.index.ntotal == 26
    new = str(workspace / "new" / "0022_c1s1_000001_00.png")
    assert (
        search_images(gallery, cadnet, [new], request=SearchRequest(k=1), job=EmbedJob(workers=0))[0].hits[0].path
        == new
    )
    again = build_index(cadnet, table, directory, append=True, job=EmbedJob(workers=0))
    assert (again.added, again.header.count) == (0, 26)


def test_append_refuses_another_model(workspace: Path, index_dir: Path, tmp_path: Path) -> None:
    directory = copy_index(index_dir, tmp_path)
    before = file_hashes(directory)
    baseline = load_model(workspace / "baseline.pt")
    with pytest.raises(ReidxError, match="embedded differently"):
        build_index(baseline, images_table([workspace / "new"]), directory, append=True)
    with pytest.raises(ReidxError, match="already holds an index"):
        build_index(baseline, images_table([workspace / "new"]), directory)
    assert file_hashes(directory) == before


class Interrupt(Exception):
    pass


def stop_after(chunks: int, seen: list[int]):
    """An ``on_chunk`` hook that records progress and raises after ``chunks`` chunks."""

    def hook(done: int) -> None:
        seen.append(done)
        if len(seen) == chunks:
            raise Interrupt

    return hook


def test_interrupted_embed_resumes_without_duplicates(workspace: Path, tmp_path: Path, cadnet) -> None:
    table = images_table([workspace / "gallery"])
    out, seen = tmp_path / "idx", []
    with pytest.raises(Interrupt):
        build_index(
            cadnet, table, out, job=EmbedJob(batch_size=4, chunk_size=8, workers=0, on_chunk=stop_after(2, seen))
        )
    assert seen == [8, 16] and not (out / HEADER_NAME).exists()
    assert len(list((out / PARTIAL_NAME).glob("chunk-*.npy"))) == 2
    resumed: list[int] = []
    build_index(cadnet, table, out, job=EmbedJob(batch_size=4, chunk_size=8, workers=0, on_chunk=resumed.append))
    assert resumed == [24]  # only the last chunk was embedded again
    gallery = open_gallery_dir(out)
    assert gallery.metadata["path"].tolist() == table["path"].tolist() and not (out / PARTIAL_NAME).exists()
    expected = embed_paths(cadnet, list(table["path"]), workers=0)
    np.testing.assert_allclose(gallery.index.reconstruct_n(0, len(gallery)), expected, atol=1e-6)


def test_another_jobs_partial_state_is_discarded(workspace: Path, tmp_path: Path, cadnet) -> None:
    table, out = images_table([workspace / "gallery"]), tmp_path / "idx"
    with pytest.raises(Interrupt):
        build_index(cadnet, table, out, job=EmbedJob(batch_size=4, chunk_size=8, workers=0, on_chunk=stop_after(1, [])))
    seen: list[int] = []
    result = build_index(
        cadnet, table, out, mode="f", job=EmbedJob(batch_size=4, chunk_size=8, workers=0, on_chunk=seen.append)
    )
    assert seen == [8, 16, 24] and result.header.dim == 512 and result.header.count == IDS * CAMERAS


def test_failed_rebuild_leaves_the_index_intact(workspace: Path, index_dir: Path, tmp_path: Path, cadnet) -> None:
    directory = copy_index(index_dir, tmp_path)
    before = file_hashes(directory)
    table = images_table([workspace / "gallery"])
    with pytest.raises(Interrupt):
        build_index(
            cadnet, table, directory, overwrite=True, job=EmbedJob(chunk_size=8, workers=0, on_chunk=stop_after(1, []))
        )
    with pytest.raises(ReidxError, match="cannot read image"):
        build_index(cadnet, images_table([workspace / "notes.jpg"]), directory, append=True, job=EmbedJob(workers=0))
    assert file_hashes(directory) == before and len(open_gallery_dir(directory)) == IDS * CAMERAS


def test_ivfpq_refused_for_a_small_gallery(workspace: Path, tmp_path: Path, cadnet) -> None:
    with pytest.raises(ReidxError, match="ivfpq needs at least .* use --index flat"):
        build_index(cadnet, images_table([workspace / "gallery"]), tmp_path / "i", spec=IndexSpec(index_type="ivfpq"))
    assert not (tmp_path / "i" / PARTIAL_NAME).exists()  # refused before embedding anything


def test_embed_a_prepared_dataset_split(workspace: Path, tmp_path: Path) -> None:
    paths = gallery_paths(workspace)[:6]
    frame = pd.DataFrame(
        {
            "path": paths * 2,
            "pid": [1, 1, 1, 2, 2, 2] * 2,
            "camid": [0, 1, 2] * 4,
            "split": ["gallery"] * 12,
            "rate": [1] * 12,
            "source": paths * 2,
            "trial": [0] * 6 + [1] * 6,
            "query_set": [""] * 12,
        }
    )
    write_dataset(tmp_path / "ds", frame, DatasetInfo("synthetic", "single-shot", [2, 3, 4], trials=2))
    with pytest.raises(ReidxError, match="pass --trial N"):
        gallery_table([], tmp_path / "ds")
    with pytest.raises(ReidxError, match="both images and --dataset"):
        gallery_table([workspace / "new"], tmp_path / "ds", trial=0)
    args = ["embed", "--checkpoint", str(workspace / "baseline.pt"), "--dataset", str(tmp_path / "ds")]
    result = CliRunner().invoke(
        app, [*args, "--trial", "1", "--out", str(tmp_path / "idx"), "--workers", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added"] == 6 and summary["header"]["model"] == "baseline"
    metadata = pd.read_parquet(tmp_path / "idx" / METADATA_NAME)
    assert set(metadata["trial"]) == {1} and {"rate", "source", "split", "query_set"} <= set(metadata.columns)


def test_search_cli_json_montage_and_threshold(workspace: Path, index_dir: Path, tmp_path: Path) -> None:
    montage = tmp_path / "hits.png"
    queries = [str(workspace / "0003_c1s9_lowres.png"), gallery_paths(workspace)[0]]
    args = ["search", *queries, "--gallery", str(index_dir), "--top-k", "4", "--json", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--montage", str(montage), "--min-score", "0.9999"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [answer["query"] for answer in answers] == queries and answers[0]["pid"] == 3
    assert all(set(hit) >= {"path", "score", "pid", "camid", "rank"} for hit in answers[0]["results"])
    assert answers[1]["in_gallery"] is True and answers[1]["results"][0]["above_threshold"] is True
    assert answers[1]["results"][1]["above_threshold"] is False
    with Image.open(montage) as image:
        assert image.format == "PNG" and image.width > 5 * 32 and image.height > 64
    table = CliRunner().invoke(app, ["search", queries[1], "--gallery", str(index_dir), "--top-k", "2"])
    assert table.exit_code == 0 and "rank" in table.stdout and "score" in table.stdout


def test_search_cli_filters(workspace: Path, index_dir: Path, tmp_path: Path) -> None:
    query = gallery_paths(workspace)[7]  # 0003_c2...
    base = ["search", query, "--gallery", str(index_dir), "--json", "--workers", "0", "--top-k", "30"]
    other = json.loads(CliRunner().invoke(app, [*base, "--other-cameras"]).stdout)[0]
    assert other["camid"] == 2 and len(other["results"]) == IDS * (CAMERAS - 1)
    assert all(hit["camid"] != 2 for hit in other["results"])
    chosen = json.loads(CliRunner().invoke(app, [*base, "--pid", "3", "--pid", "5", "--camera", "3"]).stdout)[0]
    assert sorted(hit["pid"] for hit in chosen["results"]) == [3, 5]
    assert {hit["camid"] for hit in chosen["results"]} == {3}
    plain = str(shutil.copy(query, tmp_path / "plain.png"))
    unknown = CliRunner().invoke(app, ["search", plain, "--gallery", str(index_dir), "--other-cameras"])
    assert unknown.exit_code == 1 and "--query-camera" in str(unknown.exception)
    given = CliRunner().invoke(app, ["search", plain, *base[2:], "--other-cameras", "--query-camera", "2"])
    assert json.loads(given.stdout)[0]["results"] == other["results"]


def run_reidx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidx", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing index", "not an image", "wrong checkpoint"])
def test_bad_input_is_one_line_on_stderr(workspace: Path, index_dir: Path, tmp_path: Path, case: str) -> None:
    query, gallery, extra = str(workspace / "0003_c1s9_lowres.png"), str(index_dir), []
    if case == "missing index":
        gallery = str(tmp_path / "nowhere")
    elif case == "not an image":
        query = str(workspace / "notes.jpg")
    else:
        extra = ["--checkpoint", str(workspace / "baseline.pt")]
    before = file_hashes(index_dir)
    done = run_reidx("search", query, "--gallery", gallery, *extra, "--workers", "0")
    expected = {"missing index": "no index at", "not an image": "cannot read image", "wrong checkpoint": "is not the"}
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:") and expected[case] in done.stderr
    assert "Traceback" not in done.stderr and file_hashes(index_dir) == before


def test_reduce_dim_index_searches_with_full_size_queries(workspace: Path, tmp_path: Path, cadnet) -> None:
    """``--reduce-dim``: a PCA inside the index, recorded in the header; search embeds 1024-d queries as before."""
    out = tmp_path / "pca"
    result = CliRunner().invoke(
        app,
        ["embed", "--checkpoint", str(workspace / "cadnet.pt"), str(workspace / "gallery"), "--out", str(out)]
        + ["--reduce-dim", "16", "--workers", "0", "--json"],
    )
    assert result.exit_code == 0, result.output
    header = json.loads(result.stdout)["header"]
    assert header["dim"] == 1024 and header["params"] == {"reduce_dim": 16}
    queries = gallery_paths(workspace)[:3]
    found = CliRunner().invoke(app, ["search", *queries, "--gallery", str(out), "--top-k", "3", "--json"])
    assert found.exit_code == 0, found.output
    assert [answer["results"][0]["path"] for answer in json.loads(found.stdout)] == queries
    with pytest.raises(ReidxError, match="add --index ivfpq"):
        build_index(cadnet, images_table([workspace / "gallery"]), tmp_path / "disk", spec=IndexSpec(on_disk=True))
