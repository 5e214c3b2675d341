"""Gallery backends: FAISS and Milvus (a real Milvus Lite engine) give the same results, keep the same rules."""

from __future__ import annotations

import json
import os
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
from reidx.errors import ReidxError
from reidx.gallery import BACKENDS, BackendRecord, GalleryFilter, GalleryWrite, StoreRequest, open_gallery_dir
from reidx.gallery.directory import HEADER_NAME, METADATA_NAME, RECORD_NAME, IndexHeader
from reidx.gallery.milvus import MilvusGallery, connect, count_rows, expression
from reidx.models import build_model
from reidx.models.loading import load_model
from reidx.retrieval import EmbedJob, SearchRequest, build_index, images_table, rank_vectors
from tests.galleries import CPU, FINGERPRINT, normalised, write_gallery
from tests.test_safety_output_faults import mount_tmpfs


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite file for the module (each file starts its own embedded server)."""
    return str(tmp_path_factory.mktemp("milvus") / "gallery.db")


def test_milvus_ranks_like_faiss_with_ties_in_gallery_order(tmp_path: Path, lite: str) -> None:
    rng = np.random.default_rng(0)
    base = normalised(rng.standard_normal((6, 16)))
    vectors = np.concatenate([base[rng.integers(0, 6, 120)], normalised(rng.standard_normal((180, 16)))])
    faiss_gallery = write_gallery(tmp_path / "f", vectors, "faiss", lite)
    milvus_gallery = write_gallery(tmp_path / "m", vectors, "milvus", lite)
    assert isinstance(milvus_gallery, MilvusGallery) and len(milvus_gallery) == 300
    queries = np.concatenate([base, vectors[150:160]])  # base rows: ~20 exact copies each, a tie at every k
    for k in (1, 5, 30):
        f_scores, f_ids = faiss_gallery.search(queries, k)
        m_scores, m_ids = milvus_gallery.search(queries, k)
        np.testing.assert_array_equal(m_ids, f_ids)
        np.testing.assert_allclose(m_scores, f_scores, atol=1e-5)
    tied = milvus_gallery.search(base[:1], 3)[1][0]
    assert tied.tolist() == np.flatnonzero((vectors == base[0]).all(axis=1))[:3].tolist()  # lowest ids first


def test_milvus_filter_expression_matches_a_mask(tmp_path: Path, lite: str) -> None:
    rng = np.random.default_rng(1)
    vectors = normalised(rng.standard_normal((200, 8)))
    metadata = pd.DataFrame(
        {"path": [f"p{i}.png" for i in range(200)], "pid": np.arange(200) % 7, "camid": np.arange(200) % 3}
    )
    gallery = write_gallery(tmp_path / "m", vectors, "milvus", lite, metadata)
    conditions = [("pid", True, (1, 2, 3)), ("camid", False, (0,))]
    assert expression(conditions) == "pid in [1, 2, 3] and camid not in [0]"
    _, ids = gallery.search(vectors[:4], 10, expr=expression(conditions))
    passing = np.flatnonzero(metadata["pid"].isin([1, 2, 3]) & (metadata["camid"] != 0))
    expected = np.argsort(-(vectors[:4] @ vectors[passing].T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, passing[expected])
    _, none = gallery.search(vectors[:1], 5, expr="pid in [99]")
    assert none.tolist() == [[-1] * 5]


def test_filters_give_the_same_hits_on_every_backend(tmp_path: Path, lite: str) -> None:
    rng = np.random.default_rng(3)
    vectors = normalised(rng.standard_normal((240, 8)))
    vectors[100:120] = vectors[0]  # ties across the filter's boundary
    metadata = pd.DataFrame(
        {"path": [f"p{i}.png" for i in range(240)], "pid": np.arange(240) % 11, "camid": np.arange(240) % 4}
    )
    galleries = [write_gallery(tmp_path / name, vectors, name, lite, metadata) for name in BACKENDS.names()]
    names = [f"{pid:04d}_c{pid % 4}s1_000001_00.png" for pid in range(1, 9)]
    queries = vectors[[0, 1, 2, 3, 100, 5, 6, 7]]
    for spec in (GalleryFilter.of(other_cameras=True), GalleryFilter.of([1, 2], [0, 3, 5, 7], True)):
        one, *others = (
            rank_vectors(gallery, queries, names, request=SearchRequest(k=12, filters=spec)) for gallery in galleries
        )
        for a, b in [pair for other in others for pair in zip(one, other, strict=True)]:
            assert [hit.index_id for hit in a.hits] == [hit.index_id for hit in b.hits] and len(a.hits) > 0
            np.testing.assert_allclose([hit.score for hit in a.hits], [hit.score for hit in b.hits], atol=1e-5)
            allowed = metadata["camid"] != b.camid
            if spec.pids:
                allowed &= metadata["camid"].isin(spec.cameras) & metadata["pid"].isin(spec.pids)
            assert all(allowed[hit.index_id] for hit in b.hits)


def test_open_refuses_a_missing_or_inconsistent_collection(tmp_path: Path, lite: str) -> None:
    vectors = normalised(np.random.default_rng(2).standard_normal((20, 8)))
    gallery = write_gallery(tmp_path / "m", vectors, "milvus", lite)
    client, name = gallery.client, gallery.record.collection
    client.delete(name, filter="id >= 15")
    with pytest.raises(ReidxError, match="inconsistent .*collection \\S+ 15"):
        open_gallery_dir(tmp_path / "m", CPU)
    client.drop_collection(name)
    with pytest.raises(ReidxError, match="has no collection"):
        open_gallery_dir(tmp_path / "m", CPU)


INPUT_SIZE = (64, 32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CAD-Net checkpoint, 12 Market-named gallery images in ``gallery/``, 2 more in ``new/``."""
    root = tmp_path_factory.mktemp("backends")
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=3, arch="resnet18", discriminator_width=8)
    save_checkpoint(root / "cadnet.pt", model, INPUT_SIZE)
    rng = np.random.default_rng(0)
    for folder, pids in (("gallery", range(1, 5)), ("new", range(21, 22))):
        (root / folder).mkdir()
        for pid in pids:
            for cam in (1, 2, 3) if folder == "gallery" else (1, 2):
                blocks = (rng.random((4, 2, 3)) * 255).astype(np.uint8)
                image = Image.fromarray(blocks).resize(INPUT_SIZE[::-1], Image.NEAREST)
                image.save(root / folder / f"{pid:04d}_c{cam}s1_000001_00.png")
    return root


def embed(*args: str) -> None:
    result = CliRunner().invoke(app, ["--device", "cpu", "embed", *args, "--workers", "0"])
    assert result.exit_code == 0, result.output


def search_json(workspace: Path, gallery: Path, *options: str) -> list[dict]:
    queries = [str(p) for p in sorted((workspace / "gallery").glob("*.png"))[::4]]
    result = CliRunner().invoke(
        app, ["--device", "cpu", "search", *queries, "--gallery", str(gallery), "--json", "--top-k", "5", *options]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_milvus_gallery_searches_like_faiss(workspace: Path, tmp_path: Path, lite: str) -> None:
    checkpoint, gallery = str(workspace / "cadnet.pt"), str(workspace / "gallery")
    embed("--checkpoint", checkpoint, gallery, "--out", str(tmp_path / "f"))
    embed("--checkpoint", checkpoint, gallery, "--out", str(tmp_path / "m"), "--backend", "milvus", "--uri", lite)
    record = json.loads((tmp_path / "m" / "backend.json").read_text())
    assert record["backend"] == "milvus" and record["uri"] == lite
    files = {HEADER_NAME, METADATA_NAME, "backend.json", ".reidx-output.json"}
    assert {p.name for p in (tmp_path / "m").iterdir()} == files
    assert (tmp_path / "f" / HEADER_NAME).read_text() == (tmp_path / "m" / HEADER_NAME).read_text()
    from_faiss, from_milvus = search_json(workspace, tmp_path / "f"), search_json(workspace, tmp_path / "m")
    for one, other in zip(from_faiss, from_milvus, strict=True):
        assert [hit["index_id"] for hit in one["results"]] == [hit["index_id"] for hit in other["results"]]
        assert [hit["path"] for hit in one["results"]] == [hit["path"] for hit in other["results"]]
        scores = [[hit["score"] for hit in result["results"]] for result in (one, other)]
        np.testing.assert_allclose(*scores, atol=1e-5)
        assert one["results"][0]["path"] == one["query"]
    options = ("--other-cameras", "--camera", "1", "--camera", "3")
    from_faiss, from_milvus = (
        search_json(workspace, tmp_path / "f", *options),
        search_json(workspace, tmp_path / "m", *options),
    )
    assert [[hit["index_id"] for hit in one["results"]] for one in from_faiss] == [
        [hit["index_id"] for hit in one["results"]] for one in from_milvus
    ]
    assert all(hit["camid"] in (1, 3) and hit["camid"] != one["camid"] for one in from_milvus for hit in one["results"])


def test_milvus_append_overwrite_and_refusals(workspace: Path, tmp_path: Path, lite: str) -> None:
    cadnet, out = load_model(workspace / "cadnet.pt"), tmp_path / "m"
    table = images_table([workspace / "gallery"])
    first = build_index(
        cadnet, table, out, devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("milvus", {"uri": lite})
    )
    name = json.loads((out / "backend.json").read_text())["collection"]
    client = connect(lite)
    stray = np.full((1, first.header.dim), first.header.dim**-0.5, np.float32)
    client.insert(name, [{"id": 12, "vector": stray[0], "pid": 0, "camid": 0}])
    # ^ as an append killed after inserting, before the directory was written: searches skip it, appends replace it
    assert client.search(name, data=list(stray), limit=1)[0][0]["id"] == 12
    assert 12 not in open_gallery_dir(out, CPU).search(stray, 12)[1]
    both = images_table([workspace / "new", workspace / "gallery"])
    result = build_index(cadnet, both, out, append=True, devices=CPU, job=EmbedJob(workers=0))
    assert (result.added, result.skipped, result.header.count) == (2, 12, 14)
    gallery = open_gallery_dir(out, CPU)
    assert gallery.record.collection == name and count_rows(client, name) == 14
    new = gallery.metadata["path"].tolist()[12:]
    assert sorted(new) == sorted(str(p) for p in (workspace / "new").glob("*.png"))
    with pytest.raises(ReidxError, match="drop them when appending"):
        build_index(
            cadnet,
            both,
            out,
            append=True,
            devices=CPU,
            job=EmbedJob(workers=0),
            store=StoreRequest(None, {"uri": str(tmp_path / "other.db")}),
        )
    with pytest.raises(ReidxError, match="keeps its vectors in milvus, not faiss"):
        build_index(cadnet, both, out, append=True, devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("faiss"))
    with pytest.raises(ReidxError, match="already holds an index"):
        build_index(
            cadnet, table, out, devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("milvus", {"uri": lite})
        )
    build_index(
        cadnet,
        table,
        out,
        overwrite=True,
        devices=CPU,
        job=EmbedJob(workers=0),
        store=StoreRequest("milvus", {"uri": lite}),
    )
    renewed = json.loads((out / "backend.json").read_text())["collection"]
    assert renewed != name and not client.has_collection(name) and len(open_gallery_dir(out, CPU)) == 12


def test_milvus_user_errors_leave_nothing(workspace: Path, tmp_path: Path, lite: str) -> None:
    cadnet, table = load_model(workspace / "cadnet.pt"), images_table([workspace / "gallery"])
    with pytest.raises(ReidxError, match="needs --uri"):
        build_index(cadnet, table, tmp_path / "a", devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("milvus"))
    with pytest.raises(ReidxError, match="inside --out"):
        inside = str(tmp_path / "b" / "x.db")
        build_index(
            cadnet,
            table,
            tmp_path / "b",
            devices=CPU,
            job=EmbedJob(workers=0),
            store=StoreRequest("milvus", {"uri": inside}),
        )
    with pytest.raises(ReidxError, match="unknown gallery backend 'qdrant'"):
        build_index(cadnet, table, tmp_path / "c", devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("qdrant"))
    with pytest.raises(ReidxError, match="are for --backend milvus"):
        build_index(
            cadnet, table, tmp_path / "d", devices=CPU, job=EmbedJob(workers=0), store=StoreRequest(None, {"uri": lite})
        )
    assert not any(tmp_path.iterdir())


def test_serve_answers_from_a_milvus_gallery(tiny_gallery: Path, tmp_path: Path, lite: str) -> None:
    from fastapi.testclient import TestClient

    from reidx.retrieval.search import open_gallery, search_images
    from reidx.service.app import create_app

    loaded = load_model(tiny_gallery / "model.pt")
    table = images_table([tiny_gallery / "gallery"])
    build_index(
        loaded, table, tmp_path / "m", devices=CPU, job=EmbedJob(workers=0), store=StoreRequest("milvus", {"uri": lite})
    )
    gallery, _ = open_gallery(tmp_path / "m", devices=CPU)
    client = TestClient(create_app(gallery, loaded))
    health = client.get("/health").json()
    assert health["index"]["backend"] == "milvus" and health["counts"]["entries"] == 12
    queries = sorted((tiny_gallery / "queries").glob("*.png"))
    files = [("images", (path.name, path.read_bytes(), "image/png")) for path in queries]
    answer = client.post("/search", files=files, data={"top_k": "4", "other_cameras": "true"}).json()
    faiss_gallery, _ = open_gallery(tiny_gallery / "idx", devices=CPU)
    others = GalleryFilter.of(other_cameras=True)
    expected = search_images(
        faiss_gallery, loaded, queries, request=SearchRequest(k=4, filters=others), job=EmbedJob(workers=0)
    )
    assert [[hit["index_id"] for hit in one["results"]] for one in answer] == [
        [hit.index_id for hit in result.hits] for result in expected
    ]
    assert all(hit["camid"] != 1 for one in answer for hit in one["results"])


def test_milvus_lite_refuses_ivfpq_in_one_line_and_leaves_nothing(tmp_path: Path, lite: str) -> None:
    np.save(tmp_path / "chunk.npy", normalised(np.random.default_rng(4).standard_normal((50, 16))))
    params = {"nlist": 4, "pq_m": 4, "nprobe": 2}
    header = IndexHeader(dict(FINGERPRINT), "model.pt", "baseline", 16, 0, "ivfpq", params)
    metadata = pd.DataFrame({"path": [f"p{i}.png" for i in range(50)], "pid": 0, "camid": 0})
    record = BackendRecord("milvus", lite, "refused")
    with pytest.raises(ReidxError, match="refused the gallery: invalid index type: IVF_PQ"):
        MilvusGallery.write(GalleryWrite(tmp_path / "m", header, None, metadata, [tmp_path / "chunk.npy"], CPU, record))
    assert not (tmp_path / "m").exists()
    assert not [name for name in connect(lite).list_collections() if name.startswith("refused")]


def run_fd(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The console entry point in-process, with file-descriptor capture (what Milvus Lite's own process
    prints lands there too); returns ``(exit code, stderr)``."""
    from reidx.cli import main

    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", ["reidx", "--device", "cpu", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capfd.readouterr().err


def refused(result: tuple[int, str], *needles: str) -> None:
    """Exit 1 with exactly one line on stderr, which holds every needle."""
    code, err = result
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles), err


def lite_index_naming(out: Path, db: Path, lite: str) -> None:
    """An index whose ``backend.json`` names ``db``: a copy of the module's Milvus Lite file, which holds its
    collection (this process keeps ``lite`` itself open, and would keep ``db`` open once it opened it)."""
    write_gallery(out, normalised(np.random.default_rng(7).standard_normal((20, 8))), "milvus", lite)
    shutil.copyfile(lite, db)
    record = json.loads((out / RECORD_NAME).read_text())
    (out / RECORD_NAME).write_text(json.dumps({**record, "uri": str(db)}))


def test_milvus_lite_in_a_read_only_folder_is_refused_in_one_line(
    capfd, monkeypatch, tiny_gallery: Path, tmp_path: Path, lite: str
) -> None:
    folder, index, db = tmp_path / "ro", tmp_path / "idx", tmp_path / "ro" / "g.db"
    if os.geteuid() == 0:  # root writes through modes: a tmpfs remounted read-only
        if not mount_tmpfs(folder, "size=8m"):
            pytest.skip("cannot mount a tmpfs here")
        lite_index_naming(index, db, lite)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        folder.mkdir()
        lite_index_naming(index, db, lite)
        folder.chmod(0o555)
    try:
        before = db.read_bytes()
        query, model = tiny_gallery / "queries" / "0002_c1s2_000002_00.png", tiny_gallery / "model.pt"
        refused(run_fd(capfd, monkeypatch, "search", query, "--gallery", index), str(db), "read-only", "writable")
        append = ("embed", "--checkpoint", model, query, "--out", index, "--append", "--workers", "0")
        refused(run_fd(capfd, monkeypatch, *append), str(db), "read-only")
        new = ("embed", "--checkpoint", model, query, "--out", tmp_path / "new", "--backend", "milvus")
        refused(run_fd(capfd, monkeypatch, *new, "--uri", folder / "new.db"), "new.db", "read-only")
        assert sorted(p.name for p in folder.iterdir()) == ["g.db"] and db.read_bytes() == before
        assert not (tmp_path / "new").exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_a_damaged_milvus_lite_file_is_named_in_one_line_and_kept(
    capfd, monkeypatch, tiny_gallery: Path, tmp_path: Path, lite: str
) -> None:
    index, db = tmp_path / "idx", tmp_path / "lite" / "g.db"
    db.parent.mkdir()
    lite_index_naming(index, db, lite)
    query, model = tiny_gallery / "queries" / "0002_c1s2_000002_00.png", tiny_gallery / "model.pt"
    damaged = bytearray(db.read_bytes())
    damaged[100:4000] = b"\xff" * 3900  # its header intact, its first pages not
    for content, reason in ((bytes(damaged), "malformed"), (b"not a database at all\n", "not a database")):
        db.write_bytes(content)
        refused(run_fd(capfd, monkeypatch, "search", query, "--gallery", index), str(db), "damaged", reason, "NEW.db")
        append = ("embed", "--checkpoint", model, query, "--out", index, "--append", "--workers", "0")
        refused(run_fd(capfd, monkeypatch, *append), str(db), "damaged")
        assert db.read_bytes() == content and sorted(p.name for p in db.parent.iterdir()) == ["g.db"]


def test_milvus_lite_file_names_it_cannot_use_are_refused_before_embedding(
    capfd, monkeypatch, tiny_gallery: Path, tmp_path: Path
) -> None:
    embed = ("embed", "--checkpoint", tiny_gallery / "model.pt", tiny_gallery / "queries", "--backend", "milvus")
    (tmp_path / "folder.db").mkdir()
    for uri, needle in (
        (tmp_path / "a name.db", "cannot use the file name"),
        (tmp_path / "missing" / "g.db", "no folder"),
        (tmp_path / "folder.db", "is not a Milvus Lite file"),
    ):
        refused(run_fd(capfd, monkeypatch, *embed, "--out", tmp_path / "idx", "--uri", uri), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db"]


def test_appending_another_models_embeddings_is_refused_before_milvus_stores_any(tmp_path: Path, lite: str) -> None:
    vectors = normalised(np.random.default_rng(5).standard_normal((10, 8)))
    gallery = write_gallery(tmp_path / "m", vectors, "milvus", lite)
    header_before = (tmp_path / "m" / HEADER_NAME).read_bytes()
    np.save(tmp_path / "other.npy", normalised(np.random.default_rng(6).standard_normal((3, 16))))
    added = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "pid": -1, "camid": -1})
    metadata = pd.concat([gallery.metadata, added], ignore_index=True)
    job = GalleryWrite(tmp_path / "m", gallery.header, gallery, metadata, [tmp_path / "other.npy"], CPU, gallery.record)
    with pytest.raises(ReidxError, match="the model gives 16-d embeddings, the index holds 8-d ones"):
        MilvusGallery.write(job)  # Milvus Lite itself would store them, cut or padded to 8-d
    assert count_rows(gallery.client, gallery.record.collection) == 10
    assert (tmp_path / "m" / HEADER_NAME).read_bytes() == header_before and len(open_gallery_dir(tmp_path / "m")) == 10
