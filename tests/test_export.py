"""``reidx export`` and ``--model-file``: onnxruntime's embeddings equal torch's for every model and mode, indexes
built with either rank alike and are interchangeable, every backbone exports, and foreign, damaged or other
models' ONNX files are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch

from reidx import fingerprints
from reidx.checkpoint import save_checkpoint
from reidx.data.loading import iterate_images
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths
from reidx.evaluation.embedders import TorchEmbedder
from reidx.export.onnx import export_onnx
from reidx.export.runtime import GRAPH_PART, open_onnx, read_export
from reidx.gallery import open_gallery_dir
from reidx.models import build_model, list_models, model_class
from reidx.models.backbones import list_backbones
from reidx.models.loading import build_network, load_model, open_model_checkpoint
from reidx.retrieval import EmbedJob, SearchRequest, build_index, images_table, search_images
from reidx.retrieval.search import open_gallery
from reidx.train import run_training
from tests.test_cli import ROOT, TORCH_PROBE
from tests.tiny import TINY

CPU = Devices("cpu")
MIN_COSINE = 0.9999
CASES = [(name, mode) for name in ("cadnet", "baseline") for mode in model_class(name).embedding_modes]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset and a CAD-Net and a baseline trained on it for one tiny epoch (last.pt each). CAD-Net's
    G is residual: after one epoch a plain G paints nearly one image for every input, so its g embeddings tie
    within float noise and no two runs could rank them alike."""
    root = tmp_path_factory.mktemp("export")
    prepare_dataset("synthetic", None, root / "data", ids=6, cameras=2, images_per_camera=2, workers=2)
    for name, extra in (("cadnet", {"residual_recovery": True}), ("baseline", {})):
        options = {"dataset": str(root / "data"), **TINY, "model": name, "epochs": 1, "val_ids": 0, "seed": 0}
        run_training(root / name, {**options, **extra}, devices=CPU, show_progress=False)
    return root


def checkpoint(workspace: Path, name: str) -> Path:
    return workspace / name / "last.pt"


def exported(workspace: Path, name: str, mode: str = "fused") -> Path:
    """The ONNX export of the ``name`` run in ``mode`` (written once per module, shared by the tests)."""
    path = workspace / f"{name}-{mode}.onnx"
    if not path.exists():
        export_onnx(checkpoint(workspace, name), path, mode)
    return path


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_onnxruntime_embeds_like_torch_and_its_index_ranks_alike(workspace: Path, name: str, mode: str) -> None:
    model_file = exported(workspace, name, mode)
    torch_embedder = TorchEmbedder.of(load_model(checkpoint(workspace, name)), mode)
    onnx_embedder = open_onnx(model_file, mode, CPU)
    assert onnx_embedder.fingerprint() == torch_embedder.fingerprint()
    gallery = [str(p) for p in sorted((workspace / "data" / "hr").rglob("*.png"))]
    queries = [str(p) for p in sorted((workspace / "data" / "lr").rglob("*.png"))]
    assert len(gallery) >= 12 and len(queries) >= 6
    expected = embed_paths(torch_embedder, gallery + queries, batch_size=5, workers=0)
    got = embed_paths(onnx_embedder, gallery + queries, batch_size=7, workers=0)  # other batch sizes: dynamic N
    cosine = np.sum(expected * got, axis=1)
    assert cosine.min() >= MIN_COSINE, cosine.min()
    indexes = {}
    for runtime, embedder in (("torch", torch_embedder), ("onnx", onnx_embedder)):
        build_index(embedder, images_table([workspace / "data" / "hr"]), workspace / f"idx-{name}-{mode}-{runtime}")
        indexes[runtime] = open_gallery_dir(workspace / f"idx-{name}-{mode}-{runtime}", CPU)
    assert indexes["torch"].header.fingerprint == indexes["onnx"].header.fingerprint
    assert indexes["onnx"].header.checkpoint == str(model_file.resolve())
    request, job = SearchRequest(k=len(gallery)), EmbedJob(workers=0)
    ranked = {
        (index, runtime): [[hit.index_id for hit in found.hits] for found in search_images(*index_run, request, job)]
        for index in indexes
        for runtime, embedder in (("torch", torch_embedder), ("onnx", onnx_embedder))
        for index_run in [(indexes[index], embedder, queries)]
    }
    assert len({json.dumps(order) for order in ranked.values()}) == 1  # every index x runtime ranks alike


def test_the_numpy_loop_decodes_as_the_torch_loop_and_embeds_alike(workspace: Path) -> None:
    """The ONNX path's batches (decoded in threads into numpy, no torch) are the torch path's, bit for bit, and
    its embeddings agree with the checkpoint's to cosine >= 0.99999 per image."""
    paths = [str(p) for p in sorted((workspace / "data").rglob("*.png"))]
    rates = [1 + i % 3 for i in range(len(paths))]
    as_torch = list(iterate_images(paths, (64, 32), 5, 2, rates))
    as_numpy = list(iterate_images(paths, (64, 32), 5, 2, rates, numpy=True))
    assert len(as_numpy) == len(as_torch) and all(isinstance(images, np.ndarray) for images, _ in as_numpy)
    for (got, got_ids), (want, want_ids) in zip(as_numpy, as_torch, strict=True):
        assert np.array_equal(got, want.numpy()) and np.array_equal(got_ids, want_ids.numpy())
    for name in ("cadnet", "baseline"):
        expected = embed_paths(load_model(checkpoint(workspace, name)), paths, batch_size=8, workers=2)
        got = embed_paths(open_onnx(exported(workspace, name), None, CPU), paths, batch_size=8, workers=2)
        assert np.sum(expected * got, axis=1).min() >= 0.99999, name


def test_an_index_is_searched_with_the_other_runtimes_model_and_refuses_another_model(workspace: Path) -> None:
    cadnet, fused = checkpoint(workspace, "cadnet"), exported(workspace, "cadnet")
    g = exported(workspace, "cadnet", "g")
    build_index(
        load_model(cadnet), images_table([workspace / "data" / "hr"]), workspace / "by-pt", job=EmbedJob(workers=0)
    )
    build_index(
        open_onnx(fused), images_table([workspace / "data" / "hr"]), workspace / "by-onnx", job=EmbedJob(workers=0)
    )
    _, embedder = open_gallery(workspace / "by-pt", fused, CPU)
    assert embedder.runtime == "onnxruntime"
    _, embedder = open_gallery(workspace / "by-onnx", None, CPU)  # the header's model file: the ONNX one
    assert embedder.runtime == "onnxruntime"
    _, embedder = open_gallery(workspace / "by-onnx", cadnet, CPU)
    assert embedder.runtime == "torch"
    for other, why in ((exported(workspace, "baseline"), "checkpoint sha256"), (g, "mode fused vs g")):
        with pytest.raises(ReidxError, match=f"{other.name} is not the model .* embedded with .*{why}.*reidx export"):
            open_gallery(workspace / "by-pt", other, CPU)
    with pytest.raises(ReidxError, match="cannot append .*embedded differently"):
        build_index(open_onnx(g), images_table([workspace / "data" / "lr"]), workspace / "by-pt", append=True)
    appended = build_index(
        open_onnx(fused),
        images_table([workspace / "data" / "lr"]),
        workspace / "by-pt",
        append=True,
        job=EmbedJob(workers=0),
    )
    assert appended.added > 0


def test_cli_export_embed_search_and_the_file_rules(workspace: Path, run_cli, tmp_path: Path) -> None:
    baseline, out, hr = checkpoint(workspace, "baseline"), tmp_path / "m.onnx", workspace / "data" / "hr"
    code, stdout, stderr = run_cli("export", "--checkpoint", baseline, "--out", out, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["info"]["mode"] == "fused" and result["min_cosine"] >= MIN_COSINE
    props = {prop.key: prop.value for prop in onnx.load(out).metadata_props}
    assert props["checkpoint_sha256"] == load_model(baseline).fingerprint and props["input_size"] == "[64, 32]"
    assert json.loads(props["input_norm"])["name"] == "none" and props["model"] == "baseline"
    assert props["arch"] == "resnet18" and props["embedding_dim"] == "512"
    code, _, stderr = run_cli("export", "--checkpoint", baseline, "--out", out)
    assert code == 1 and "already holds an ONNX export reidx wrote" in stderr and "--overwrite" in stderr
    stamp = out.stat().st_mtime_ns
    assert run_cli("export", "--checkpoint", baseline, "--out", out, "--overwrite")[0] == 0
    assert out.stat().st_mtime_ns != stamp
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("mine")
    code, _, stderr = run_cli("export", "--checkpoint", baseline, "--out", foreign, "--overwrite")
    assert code == 1 and "was not written by reidx" in stderr and "--overwrite" not in stderr
    assert foreign.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reidx-files.jsonl", "m.onnx", "notes.onnx"]  # no locks
    code, _, stderr = run_cli("--device", "cpu", "embed", "--model-file", out, hr, "--out", tmp_path / "idx")
    assert code == 0, stderr
    queries = sorted((workspace / "data" / "lr").rglob("*.png"))[:2]
    code, stdout, stderr = run_cli(
        "--device", "cpu", "search", *queries, "--gallery", tmp_path / "idx", "--checkpoint", baseline, "--json"
    )
    assert code == 0, stderr
    assert len(json.loads(stdout)) == 2
    code, _, stderr = run_cli("embed", "--model-file", out, "--mode", "g", hr, "--out", tmp_path / "x")
    assert code == 1 and "makes 'fused' embeddings, not 'g'" in stderr and not (tmp_path / "x").exists()


def test_serve_answers_with_the_onnx_model_as_with_the_checkpoint(tiny_gallery: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from reidx.service.app import create_app

    export_onnx(tiny_gallery / "model.pt", tmp_path / "model.onnx")
    answers = {}
    for model_file in (None, tmp_path / "model.onnx"):
        gallery, embedder = open_gallery(tiny_gallery / "idx", model_file, CPU)
        client = TestClient(create_app(gallery, embedder))
        files = [
            ("images", (p.name, p.read_bytes(), "image/png")) for p in sorted((tiny_gallery / "queries").iterdir())
        ]
        answer = client.post("/search", files=files, data={"top_k": "12"})
        assert answer.status_code == 200, answer.text
        health = client.get("/health").json()["model"]
        answers[health["runtime"]] = answer.json()
    assert sorted(answers) == ["onnxruntime", "torch"]
    for torch_result, onnx_result in zip(answers["torch"], answers["onnxruntime"], strict=True):
        assert [hit["index_id"] for hit in torch_result["results"]] == [
            hit["index_id"] for hit in onnx_result["results"]
        ]
        scores = [
            (a["score"], b["score"]) for a, b in zip(torch_result["results"], onnx_result["results"], strict=True)
        ]
        assert max(abs(a - b) for a, b in scores) < 1e-5


def hostile_files(workspace: Path, folder: Path) -> dict[str, Path]:
    """ONNX files reidx must refuse, each with the words its error names."""
    folder.mkdir()
    data = exported(workspace, "baseline").read_bytes()
    files = {
        "empty": b"",
        "garbage": b"\x00\x01 this is not protobuf \xff" * 10,
        "truncated": data[: len(data) // 2],
    }
    foreign = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["images"], ["embedding"])],
            "foreign",
            [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, 64, 32])],
            [onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["N", 3, 64, 32])],
        )
    )
    files["foreign"] = foreign.SerializeToString()
    proto = onnx.load_model_from_string(data)
    proto.graph.initializer[0].raw_data = bytes(len(proto.graph.initializer[0].raw_data))  # zeroed weights
    files["tampered"] = proto.SerializeToString()
    proto = onnx.load_model_from_string(data)
    next(p for p in proto.metadata_props if p.key == "mode").value = "sideways"
    files["mislabelled"] = proto.SerializeToString()
    proto = onnx.load_model_from_string(data)
    claim = next(p for p in proto.metadata_props if p.key == "checkpoint_sha256")
    claim.value = load_model(checkpoint(workspace, "cadnet")).fingerprint  # another checkpoint's
    files["relabelled"] = proto.SerializeToString()
    proto = onnx.load_model_from_string(data)  # as reidx export wrote before the claim was bound to the graph
    next(p for p in proto.metadata_props if p.key == "reidx_format_version").value = "1"
    files["version 1"] = proto.SerializeToString()
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(content)
    return paths


def test_foreign_damaged_and_tampered_onnx_files_are_one_line(workspace: Path, run_cli, tmp_path: Path) -> None:
    expected = {
        "empty": "the file is empty",
        "garbage": "not an ONNX model",
        "truncated": "not an ONNX model|not a reidx export",
        "foreign": "not a reidx export",
        "tampered": "does not match the graph_sha256",
        "mislabelled": "has no embedding mode 'sideways'",
        "relabelled": "its graph was exported from",
        "version 1": "format version '1'; this reidx reads 2",
    }
    for name, path in hostile_files(workspace, tmp_path / "bad").items():
        code, stdout, stderr = run_cli(
            "embed", "--model-file", path, workspace / "data" / "hr", "--out", tmp_path / "i"
        )
        assert code == 1, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and str(path.name) in lines[0] and "reidx export" in lines[0], (name, stderr)
        assert any(words in lines[0] for words in expected[name].split("|")), (name, lines[0])
        assert not (tmp_path / "i").exists()


#: Makes protobuf (and so onnx's schema) unimportable in a fresh process.
NO_PROTOBUF = """
import sys
class NoProtobuf:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("google", "onnx"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, NoProtobuf())
"""


def test_an_exports_graph_hash_is_remembered_and_a_rewritten_file_is_checked_again(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fingerprints.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprints, "SETTLED_NS", 0)
    path = tmp_path / "m.onnx"
    shutil.copy(exported(workspace, "baseline"), path)
    data, info = read_export(path)
    key = fingerprints.stat_key(path)
    assert fingerprints.recall(path, key, GRAPH_PART) == info.graph_sha256
    assert fingerprints.recall(path, key) is None  # an entry of its own, not the whole file's SHA-256
    assert read_export(path) == (data, info)  # the remembered graph hash: the same bytes and info
    # remembered, onnxruntime loads the file itself, without protobuf in Python: a fresh process proves it
    probe = f"{NO_PROTOBUF}from reidx.export.runtime import open_onnx\nprint(open_onnx({str(path)!r}).info.model)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == info.model, done.stderr
    path.write_bytes(hostile_files(workspace, tmp_path / "bad")["tampered"].read_bytes())  # rewritten in place
    with pytest.raises(ReidxError, match="does not match the graph_sha256"):
        read_export(path)


def test_a_relabelled_export_is_refused_against_the_index_it_claims(workspace: Path, run_cli, tmp_path: Path) -> None:
    """Another checkpoint of the same model, exported, its metadata edited to claim the indexed checkpoint: the
    claim is checked against the fingerprint the graph holds."""
    cadnet = checkpoint(workspace, "cadnet")
    loaded, other = load_model(cadnet), build_network(open_model_checkpoint(cadnet))
    with torch.no_grad():
        for weight in other.parameters():
            weight.mul_(1.01)
    save_checkpoint(tmp_path / "other.pt", other, loaded.input_size)
    export_onnx(tmp_path / "other.pt", tmp_path / "other.onnx")
    proto = onnx.load(tmp_path / "other.onnx")
    next(p for p in proto.metadata_props if p.key == "checkpoint_sha256").value = loaded.fingerprint
    (tmp_path / "relabelled.onnx").write_bytes(proto.SerializeToString())
    index = tmp_path / "idx"
    build_index(loaded, images_table([workspace / "data" / "hr"]), index, job=EmbedJob(workers=0))
    before = {path.name: path.read_bytes() for path in index.iterdir()}
    query = sorted((workspace / "data" / "lr").rglob("*.png"))[0]
    code, stdout, stderr = run_cli("search", query, "--gallery", index, "--model-file", tmp_path / "relabelled.onnx")
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and not stdout, stderr
    assert "relabelled.onnx is damaged: its metadata claims checkpoint" in lines[0] and "it was relabelled" in lines[0]
    assert f"exported from {load_model(tmp_path / 'other.pt').fingerprint[:12]}" in lines[0]
    assert {path.name: path.read_bytes() for path in index.iterdir()} == before
    code, _, stderr = run_cli("search", query, "--gallery", index, "--model-file", tmp_path / "other.onnx")
    assert code == 1 and "is not the model" in stderr  # unedited, it is refused as another model, as before


def test_export_and_model_file_errors_and_help_import_no_torch(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    cases = [
        ["export", "--help"],
        ["export", "--checkpoint", str(missing / "m.pt"), "--out", str(tmp_path / "m.onnx")],
        ["embed", "--model-file", str(missing / "m.onnx"), "--out", str(tmp_path / "idx"), str(tmp_path)],
        ["search", str(tmp_path), "--gallery", str(tmp_path), "--model-file", str(missing / "m.onnx")],
        ["embed", "--out", str(tmp_path / "idx"), str(tmp_path)],
        ["serve", "--gallery", str(tmp_path), "--model-file", str(missing / "m.onnx")],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, json.dumps(cases)], capture_output=True, text=True, env=env, timeout=120
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [[0, False]] + [[1, False]] * 5, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 5
        and "model file not found" in errors[4]
        and "checkpoint not found" in errors[0]
        and "no model to embed with" in errors[3]
    )
    assert "model file not found" in errors[1] and "model file not found" in errors[2]


@pytest.mark.slow
@pytest.mark.parametrize("arch", list_backbones())
@pytest.mark.parametrize("name", list_models())
def test_every_backbone_and_model_exports_with_a_dynamic_batch(tmp_path: Path, arch: str, name: str) -> None:
    torch.manual_seed(0)
    size = (40, 24)  # not multiples of 32: G resizes its maps (the interpolations are in the graph too)
    model = build_model(name, num_classes=3, arch=arch, input_norm="imagenet", **model_class(name).tiny)
    save_checkpoint(tmp_path / "m.pt", model, size)
    result = export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx")  # fused: the whole path (other modes: above)
    assert result.min_cosine >= MIN_COSINE  # onnxruntime vs torch on random batches of 1 and 3 (traced with 2)
    assert result.info.dim == model.classifier.fc.in_features  # the pooled feature C sees: the fused embedding


@pytest.mark.parametrize("name", list_models())
def test_bnneck_and_last_stride_1_models_export(tmp_path: Path, name: str) -> None:
    """[B] options change the embedding path (C's BN after pooling, a stride-1 last stage): the graph has them."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, arch="resnet18", bnneck=True, last_stride=1, **model_class(name).tiny)
    model.classifier.bn.running_mean.uniform_(-1, 1)  # statistics unlike the identity, so the BN shows
    save_checkpoint(tmp_path / "m.pt", model, (64, 32))
    assert export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx").min_cosine >= MIN_COSINE


#: Runs ``reidx ARGS...`` with torch and torchvision (or the packages $REIDX_BLOCKED names, comma-separated) made
#: unimportable: an attempt is written to the file named by $REIDX_TORCH_LOG and fails, so a command that needs one
#: fails and the log says which module asked.
WITHOUT_TORCH = """
import os, sys, traceback

BLOCKED = os.environ.get("REIDX_BLOCKED", "torch,torchvision").split(",")

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["REIDX_TORCH_LOG"], "a") as log:
                log.write(name + " imported from:\\n" + "".join(traceback.format_stack(limit=12)) + "\\n")
            raise ImportError(f"{name} is not importable here: this command must run without torch")

sys.meta_path.insert(0, NoTorch())
sys.argv = ["reidx", *sys.argv[1:]]
from reidx.cli import main
main()
"""


def test_onnx_search_embed_and_serve_run_without_torch(tiny_gallery: Path, tmp_path: Path) -> None:
    """``search``, ``embed`` and ``serve`` with ``--model-file FILE.onnx`` never import torch or torchvision, and
    answer as the checkpoint does."""
    model_file, log = tmp_path / "model.onnx", tmp_path / "torch.log"
    export_onnx(tiny_gallery / "model.pt", model_file)
    env = {
        **os.environ,
        "REIDX_TORCH_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }

    def reidx(*args: object, blocked: str = "torch,torchvision") -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", WITHOUT_TORCH, "--device", "cpu", *map(str, args)]
        blocking = {**env, "REIDX_BLOCKED": blocked}
        return subprocess.run(command, capture_output=True, text=True, env=blocking, timeout=120)

    queries, index = tiny_gallery / "queries", tiny_gallery / "idx"
    # a query reads the index's metadata without pandas too (a quarter CPU-second of a one-query process)
    args = ("search", queries, "--gallery", index, "--model-file", model_file, "--json", "--workers", "0")
    found = reidx(*args, blocked="torch,torchvision,pandas")
    assert found.returncode == 0 and not log.exists(), found.stderr + (log.read_text() if log.exists() else "")
    gallery, embedder = open_gallery(index, None, CPU)
    expected = search_images(gallery, embedder, sorted(queries.iterdir()), SearchRequest(k=10), EmbedJob(workers=0))
    for got, want in zip(json.loads(found.stdout), expected, strict=True):
        assert [hit["index_id"] for hit in got["results"]] == [hit.index_id for hit in want.hits]
        assert max(abs(hit["score"] - ref.score) for hit, ref in zip(got["results"], want.hits, strict=True)) < 1e-5
    built = reidx(
        "embed", "--model-file", model_file, tiny_gallery / "gallery", "--out", tmp_path / "idx", "--workers", "2"
    )
    assert built.returncode == 0 and not log.exists(), built.stderr + (log.read_text() if log.exists() else "")
    assert open_gallery_dir(tmp_path / "idx", CPU).header.fingerprint == gallery.header.fingerprint
    command = [sys.executable, "-c", WITHOUT_TORCH, "--device", "cpu", "serve", "--gallery", str(index)]
    server = subprocess.Popen(
        [*command, "--model-file", str(model_file), "--port", "0"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = ""
        while "serving" not in line and server.poll() is None:
            line = server.stderr.readline()
        assert server.poll() is None, server.stderr.read()
        url = line.split(" at ")[1].split()[0]
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in sorted(queries.iterdir())]
        answer = httpx.post(url + "search", files=files, data={"top_k": "10"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [[hit["index_id"] for hit in result["results"]] for result in answer.json()] == [
            [hit.index_id for hit in result.hits] for result in expected
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not log.exists(), log.read_text()
