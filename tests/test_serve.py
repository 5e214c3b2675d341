"""``reidx serve`` through real HTTP on localhost: search = ``reidx search --json``, filters, concurrency,
bad uploads answered 4xx in one JSON line while the server keeps serving, gallery images, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from reidx.cli import app
from reidx.device import Devices
from reidx.retrieval.requests import EmbedJob, SearchRequest
from reidx.retrieval.search import open_gallery, search_images
from reidx.service.server import bind
from tests.servers import serving as served

ROOT = Path(__file__).resolve().parents[1]


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]


def post(url: str, files: list, data: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/search", files=files, data=data or {}, timeout=60)


def expected(tiny_gallery: Path, paths: list[Path], min_score: float | None = None, **options) -> list[dict]:
    """What ``reidx search --json`` answers for ``paths``, with the query field as the file name."""
    gallery, loaded = open_gallery(tiny_gallery / "idx", devices=Devices("cpu"))
    results = search_images(gallery, loaded, paths, SearchRequest(**options), EmbedJob(workers=0))
    return [{**result.judged(min_score).to_dict(), "query": Path(result.query).name} for result in results]


def queries(tiny_gallery: Path) -> list[Path]:
    return sorted((tiny_gallery / "queries").glob("*.png"))


def test_health_reports_model_index_and_counts(live_server: str, tiny_gallery: Path) -> None:
    health = httpx.get(f"{live_server}/health").json()
    assert health["status"] == "ok" and health["model"]["name"] == "baseline"
    assert health["model"]["input_size"] == [64, 32] and health["index"]["type"] == "flat"
    assert health["counts"]["entries"] == 12 and health["counts"]["identities"] == 4
    assert health["counts"]["cameras"] == [1, 2, 3] and health["index"]["directory"] == str(tiny_gallery / "idx")


def test_search_answers_what_reidx_search_json_does(live_server: str, tiny_gallery: Path) -> None:
    paths = queries(tiny_gallery)
    answer = post(live_server, upload(*paths), {"top_k": "5", "min_score": "0.5"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected(tiny_gallery, paths, k=5, min_score=0.5)
    own = post(live_server, upload(tiny_gallery / "gallery" / "0004_c2s1_000001_00.png"), {"top_k": "1"}).json()
    assert own[0]["results"][0]["path"] == str(tiny_gallery / "gallery" / "0004_c2s1_000001_00.png")
    assert own[0]["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_filters_are_the_cli_filters(live_server: str, tiny_gallery: Path) -> None:
    paths = queries(tiny_gallery)
    from reidx.gallery import GalleryFilter

    answer = post(live_server, upload(*paths), {"top_k": "20", "other_cameras": "true", "camera": ["1", "3"]})
    assert answer.status_code == 200, answer.text
    filters = GalleryFilter.of([1, 3], other_cameras=True)
    assert answer.json() == expected(tiny_gallery, paths, k=20, filters=filters)
    assert {hit["camid"] for result in answer.json() for hit in result["results"]} == {3}
    chosen = post(live_server, upload(paths[0]), {"pid": ["2", "4"], "query_camera": "2"}).json()[0]["results"]
    assert sorted((hit["pid"], hit["camid"]) for hit in chosen) == [(2, 1), (2, 2), (2, 3), (4, 1), (4, 2), (4, 3)]


def test_concurrent_requests_each_get_their_own_result(live_server: str, tiny_gallery: Path) -> None:
    """Each answer equals the same request sent alone (one image per batch, so the floats match exactly)."""
    paths = sorted((tiny_gallery / "gallery").glob("*.png"))[:8] + queries(tiny_gallery)
    truth = {path.name: post(live_server, upload(path), {"top_k": "3"}).json()[0] for path in paths}
    assert all(truth[path.name]["results"][0]["path"] == str(path) for path in paths[:8])
    answers: dict[str, object] = {}
    start = threading.Barrier(len(paths))

    def ask(path: Path) -> None:
        start.wait()
        answers[path.name] = post(live_server, upload(path), {"top_k": "3"}).json()

    threads = [threading.Thread(target=ask, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == {name: [result] for name, result in truth.items()}


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header (IHDR, CRC fixed) claims ``width`` x ``height``: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("not an image", 400, "cannot read image notes.png"),
        ("truncated", 400, "cannot read image cut.png"),
        ("decompression bomb", 400, "over the limit"),
        ("over REIDX_MAX_PIXELS", 400, "128 pixels, over the limit of 100"),
        ("body too large", 413, "over the server's limit"),
        ("too many images", 413, "over the limit of 4"),
        ("bad top_k", 422, "top_k"),
        ("no image", 422, "images"),
    ],
)
def test_bad_requests_are_one_json_line_and_the_server_keeps_serving(
    live_server: str, tiny_gallery: Path, monkeypatch: pytest.MonkeyPatch, case: str, status: int, words: str
) -> None:
    good = queries(tiny_gallery)[0]
    files, data = upload(good), {}
    if case == "not an image":
        files = [("images", ("notes.png", b"just some text", "image/png"))]
    elif case == "truncated":
        files = [("images", ("cut.png", good.read_bytes()[:60], "image/png"))]
    elif case == "decompression bomb":
        files = [("images", ("bomb.png", png_claiming(40_000, 40_000), "image/png"))]
    elif case == "over REIDX_MAX_PIXELS":
        monkeypatch.setenv("REIDX_MAX_PIXELS", "100")  # the server runs in this process
    elif case == "body too large":
        files = [("images", ("big.png", os.urandom(3 * 2**20), "image/png"))]
    elif case == "too many images":
        files = upload(good) * 5
    elif case == "bad top_k":
        data = {"top_k": "0"}
    else:
        files, data = [], {"top_k": "3"}
    answer = httpx.post(f"{live_server}/search", files=files or None, data=data, timeout=60)
    body = answer.json()
    assert answer.status_code == status and set(body) == {"error", "fix"} and words in body["error"], body
    assert "\n" not in answer.text and "Traceback" not in answer.text
    monkeypatch.delenv("REIDX_MAX_PIXELS", raising=False)
    assert post(live_server, upload(good)).status_code == 200


def test_gallery_images_only_from_the_index(live_server: str, tiny_gallery: Path) -> None:
    metadata_path = httpx.get(f"{live_server}/gallery/0/image")
    first = sorted((tiny_gallery / "gallery").glob("*.png"))[0]
    assert metadata_path.status_code == 200 and metadata_path.content == first.read_bytes()
    assert metadata_path.headers["content-type"] == "image/png"
    for bad in ("12", "-1", "..%2F..%2Fmodel.pt", "%2Fetc%2Fpasswd"):
        answer = httpx.get(f"{live_server}/gallery/{bad}/image")
        assert answer.status_code in (404, 422) and set(answer.json()) == {"error", "fix"}, bad
    assert httpx.get(f"{live_server}/nowhere").json()["error"] == "Not Found"
    page = httpx.get(f"{live_server}/")
    assert page.status_code == 200 and "<title>reidx search</title>" in page.text


def test_serve_refuses_a_public_address_unless_asked(tiny_gallery: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--gallery", str(tiny_gallery / "idx"), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "--public" in str(result.exception)
    assert "reverse proxy" in " ".join(CliRunner().invoke(app, ["serve", "--help"]).stdout.split())


def test_the_listening_socket_says_tcp() -> None:
    """asyncio sets TCP_NODELAY only on connections whose proto is TCP; without it keep-alive answers wait ~40 ms."""
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_reidx_serve_starts_and_answers(tiny_gallery: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "reidx", "--device", "cpu", "serve", "--gallery", str(tiny_gallery / "idx")]
    process = subprocess.Popen(
        [*command, "--port", "0", "--min-score", "1.5"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = process.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        health = httpx.get(f"{url[0]}/health", timeout=30).json()
        assert health["min_score"] == 1.5 and health["counts"]["entries"] == 12
        answer = post(url[0], upload(queries(tiny_gallery)[0]), {"top_k": "2"}).json()
        assert answer[0]["min_score"] == 1.5 and answer[0]["in_gallery"] is False
        assert json.dumps(answer).count("above_threshold") == 2
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def serving(index: Path, model: Path, image_roots: tuple[Path, ...] = ()) -> Iterator[str]:
    """``reidx serve``'s app on ``index`` in a uvicorn thread on a free loopback port; yields its base URL."""
    from reidx.service.app import create_app

    gallery, loaded = open_gallery(index, model, devices=Devices("cpu"))
    with served(create_app(gallery, loaded, image_roots=image_roots)) as url:
        yield url


def local_port(answer: httpx.Response) -> int:
    """The client-side port of the connection an answer came on (the same port: the same connection)."""
    return answer.extensions["network_stream"].get_extra_info("client_addr")[1]


def refused(answer: httpx.Response, status: int, *needles: str) -> None:
    body = answer.json()
    assert answer.status_code == status and set(body) == {"error", "fix"}, answer.text
    assert "\n" not in answer.text and all(needle in body["error"] + body["fix"] for needle in needles), body


@pytest.fixture(scope="module")
def hostile(tiny_gallery: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery folder embedded by ``reidx embed``, then its ``metadata.parquet`` edited as a hostile copy would
    be: rows naming a secret outside the gallery, a symlink out of it, a text file inside it, a text file named
    .png inside it and a NUL byte. Rows 5.. are untouched."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(tiny_gallery / "gallery", root / "gallery")
    embed = ["--device", "cpu", "embed", "--checkpoint", str(tiny_gallery / "model.pt"), str(root / "gallery"),
             "--out", str(root / "idx"), "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(app, embed)
    assert result.exit_code == 0, result.output
    (root / "secret.txt").write_text("root:$6$hash:19000::::::\n")
    (root / "gallery" / "link.png").symlink_to(root / "secret.txt")
    (root / "gallery" / "notes.txt").write_text("not an image")
    (root / "gallery" / "fake.png").write_text("not an image either")
    metadata = pd.read_parquet(root / "idx" / "metadata.parquet")
    edits = [str(root / "secret.txt"), str(root / "gallery" / "link.png"), str(root / "gallery" / "notes.txt"),
             str(root / "gallery" / "fake.png"), "/etc/sha\0dow"]  # fmt: skip
    metadata.loc[: len(edits) - 1, "path"] = edits
    metadata.to_parquet(root / "idx" / "metadata.parquet", index=False)
    return root


def test_serve_hands_out_only_gallery_images_from_an_edited_index(hostile: Path, tiny_gallery: Path) -> None:
    """The real ``reidx serve`` on the edited copy: every edited row is one 403 JSON line, the secret's bytes
    never leave, and the good rows are served, all on one keep-alive connection."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "reidx", "--device", "cpu", "serve", "--gallery", str(hostile / "idx")]
    process = subprocess.Popen([*command, "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", process.stderr.readline())
        assert url
        good = pd.read_parquet(hostile / "idx" / "metadata.parquet")["path"].iloc[5]
        with httpx.Client(base_url=url[0], timeout=30) as client:
            answers = [client.get(f"/gallery/{entry}/image") for entry in range(6)]
            assert len({local_port(answer) for answer in answers}) == 1
        for answer, needle in zip(
            answers, ["outside", "outside", "not an image", "not served", "outside"], strict=False
        ):
            refused(answer, 403, needle)
            assert b"root:" not in answer.content
        assert answers[5].status_code == 200 and answers[5].content == Path(good).read_bytes()
        assert answers[5].headers["content-type"] == "image/png"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_old_index_serves_images_only_from_the_operators_folder(hostile: Path, tiny_gallery: Path, tmp_path):
    """A header without image_roots (an older reidx) still opens and searches; its images are refused with the
    fix until ``--image-root`` names their folder, and even then only image files inside it."""
    old = tmp_path / "old-idx"
    shutil.copytree(hostile / "idx", old)
    header = json.loads((old / "header.json").read_text())
    assert header.pop("image_roots") == [str(hostile / "gallery")]
    (old / "header.json").write_text(json.dumps(header))
    model = tiny_gallery / "model.pt"
    with serving(old, model) as url:
        refused(httpx.get(f"{url}/gallery/5/image"), 403, "re-embed", "--image-root")
        assert post(url, upload(queries(tiny_gallery)[0])).status_code == 200
        assert httpx.get(f"{url}/health").json()["index"]["image_roots"] == []
    with serving(old, model, image_roots=(hostile / "gallery",)) as url:
        assert httpx.get(f"{url}/gallery/5/image").status_code == 200
        refused(httpx.get(f"{url}/gallery/0/image"), 403, "outside", "--image-root")
        refused(httpx.get(f"{url}/gallery/1/image"), 403, "outside")


def test_reidx_serve_says_when_an_old_index_serves_no_images(hostile: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("--device", "cpu", "serve", "--gallery", hostile / "idx", "--image-root", tmp_path / "no")
    assert code == 1 and "--image-root" in err and "is not a folder" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_score", "nan"), ("min_score", "inf"), ("min_score", "-inf"), ("min_score", "1e309"),
     ("pid", "99999999999999999999"), ("camera", "-99999999999999999999"), ("query_camera", "1e400"),
     ("nprobe", "99999999999"), ("top_k", "inf")],
)  # fmt: skip
def test_non_finite_or_huge_numbers_are_422_and_the_connection_serves_on(
    live_server: str, tiny_gallery: Path, field: str, value: str
) -> None:
    good = upload(queries(tiny_gallery)[0])
    with httpx.Client(base_url=live_server, timeout=60) as client:
        bad = client.post("/search", files=good, data={field: value})
        refused(bad, 422, field)
        assert "NaN" not in bad.text and "Infinity" not in bad.text
        fine = client.post("/search", files=good, data={"min_score": "0.5"})
        assert fine.status_code == 200 and local_port(fine) == local_port(bad)


def test_an_internal_error_is_a_500_line_and_the_connection_stays(tmp_path: Path) -> None:
    """KeepServing answers what nothing else caught without dropping the keep-alive connection."""
    from fastapi import FastAPI

    from reidx.service.app import KeepServing

    app = FastAPI()
    app.add_middleware(KeepServing)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom\nsecond line")

    @app.get("/fine")
    def fine() -> dict:
        return {"ok": True}

    with served(app, log_level="critical") as url, httpx.Client(base_url=url, timeout=30) as client:
        answers = [client.get(path) for path in ("/boom", "/fine", "/boom", "/fine")]
        assert len({local_port(answer) for answer in answers}) == 1
    refused(answers[0], 500, "kaboom second line")
    assert [answer.status_code for answer in answers] == [500, 200, 500, 200]


@pytest.mark.parametrize("value", ["inf", "nan", "1e309", "-inf"])
def test_search_refuses_a_non_finite_min_score_in_one_line(run_cli, tiny_gallery: Path, value: str) -> None:
    code, out, err = run_cli("--device", "cpu", "search", tiny_gallery / "queries", "--gallery",
                             tiny_gallery / "idx", "--json", "--min-score", value, "--workers", "0")  # fmt: skip
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip() == f"error: --min-score {value} is not a finite number — give a number, e.g. --min-score 0.5"


def test_json_output_is_standard_json() -> None:
    from reidx.console import json_text

    text = json_text({"score": math.inf, "rows": [math.nan, 1.5, (-math.inf, 2)], "name": "x"})
    assert json.loads(text) == {"score": None, "rows": [None, 1.5, [None, 2]], "name": "x"}
    assert "NaN" not in text and "Infinity" not in text
