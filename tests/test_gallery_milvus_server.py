"""The Milvus backend against a real Milvus server: the `milvus` package's embedded standalone server
(``milvus-server --data DIR --proxy-port PORT``), on loopback, started once for the session and stopped with its
child processes at the end. Skips where the package is absent (it is in the dev extra, Linux x86-64 only)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidx.errors import ReidxError
from reidx.gallery import open_gallery_dir
from reidx.gallery.directory import RECORD_NAME
from reidx.gallery.milvus import connect, count_rows
from tests.galleries import CPU, normalised, write_gallery

pytest.importorskip("milvus", reason="the `milvus` package (Milvus server) is not installed")

#: Seconds a server may take to answer its health check (9-22 s on a shared 2-core machine).
START_SECONDS = 180
#: Seconds between SIGTERM and SIGKILL when stopping (its graceful stop waits far longer).
STOP_SECONDS = 1
#: The proxy's port in the server's configs/milvus.yaml (the first two-space ``port`` under ``proxy:``).
#: The port the server's embedded etcd listens on for peers (fixed: two servers cannot run at once).
ETCD_PEER_PORT = 2380
PROXY_PORT = re.compile(r"^proxy:\n(?:(?:[ #].*)?\n)*?  port: (\d+)", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusServer:
    """``milvus-server`` runs, one at a time (its embedded etcd always takes port 2380), each a process group
    in a fresh data folder under one temporary folder; later runs link the binaries the first unpacked
    (some 450 MB) instead of unpacking them again."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="reidx-milvus-"))
        self.runs = 0
        self.process: subprocess.Popen | None = None
        self.uri = ""

    def start(self) -> None:
        """Start a run and wait (at most START_SECONDS) until it is healthy; fails the test with its log if not."""
        data = self.root / f"run{self.runs}"
        if self.runs:
            (data / "bin").mkdir(parents=True)
            for path in (self.root / "run0" / "bin").iterdir():
                os.link(path, data / "bin" / path.name)
        self.runs += 1
        command = [sys.executable, "-c", "import milvus; milvus.main()", "--data", str(data)]
        command += ["--proxy-port", str(free_port())]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its banner, printed once healthy, reaches the log at once
        log = self.root / f"run{self.runs - 1}.log"
        with open(log, "wb") as out:  # a session of its own: stop() signals the server it runs too
            self.process = subprocess.Popen(command, stdout=out, stderr=out, env=env, start_new_session=True)
        deadline, server_log = time.monotonic() + START_SECONDS, data / "logs" / "milvus-stderr.log"
        while " Process:" not in log.read_text(errors="replace"):
            crashed = server_log.exists() and "panic:" in server_log.read_text(errors="replace")
            if crashed or self.process.poll() is not None or time.monotonic() > deadline:
                tail = (server_log if crashed else log).read_text(errors="replace")[-2000:]
                self.stop()
                pytest.fail(f"milvus-server did not start (waited at most {START_SECONDS} s):\n{tail}")
            time.sleep(0.2)
        # --proxy-port is where it starts looking for a free port: the config it wrote says which it took
        config = (data / "configs" / "milvus.yaml").read_text()
        self.uri = f"http://127.0.0.1:{PROXY_PORT.search(config).group(1)}"

    def stop(self) -> None:
        """SIGTERM to the whole process group (the wrapper and the server it runs), SIGKILL to what is left."""
        if self.process is None:
            return
        for sent in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, sent)
            if not group_alive(self.process.pid, STOP_SECONDS):
                break
        self.process.wait(STOP_SECONDS)
        self.process = None


def group_alive(group: int, seconds: float) -> bool:
    """Whether a process of ``group`` (zombies aside) is still running after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
                alive |= int(fields[2]) == group and fields[0] != "Z"
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServer]:
    """The session's Milvus server runs (on free loopback ports); stopped and removed at the end."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", ETCD_PEER_PORT)) == 0:
            pytest.skip(f"port {ETCD_PEER_PORT}, which the server's embedded etcd takes, is in use (another Milvus?)")
    runs = MilvusServer()
    try:
        yield runs
    finally:
        runs.stop()
        shutil.rmtree(runs.root, ignore_errors=True)


@pytest.fixture
def server(milvus_server: MilvusServer) -> MilvusServer:
    """The session's Milvus server, running: started once, and again only after a test stopped it."""
    if milvus_server.process is None:
        milvus_server.start()
    return milvus_server


def cli(run_cli, *args: object) -> str:
    """Run reidx (in-process); its stdout, after checking it exited 0."""
    code, out, err = run_cli("--device", "cpu", *map(str, args))
    assert code == 0, err
    return out


def refused(result: tuple[int, str, str], *needles: str) -> None:
    code, _, err = result
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles), err


def ranked(run_cli, queries: list[Path], gallery: Path, *options: str) -> list[list[tuple[int, str]]]:
    found = json.loads(cli(run_cli, "search", *queries, "--gallery", gallery, "--json", "--top-k", "10", *options))
    return [[(hit["index_id"], hit["path"]) for hit in one["results"]] for one in found]


def test_embed_append_search_and_filters_on_a_server(
    run_cli, server: MilvusServer, tiny_gallery: Path, tmp_path: Path
) -> None:
    index, model = tmp_path / "idx", tiny_gallery / "model.pt"
    cli(run_cli, "embed", "--checkpoint", model, tiny_gallery / "gallery", "--out", index, "--backend", "milvus",
        "--uri", server.uri, "--workers", "0")  # fmt: skip
    record = json.loads((index / RECORD_NAME).read_text())
    assert record["backend"] == "milvus" and record["uri"] == server.uri
    queries = sorted((tiny_gallery / "queries").glob("*.png")) + sorted((tiny_gallery / "gallery").glob("*.png"))[:3]
    assert ranked(run_cli, queries, index) == ranked(run_cli, queries, tiny_gallery / "idx")  # the same top 10
    others = ("--other-cameras", "--camera", "2", "--camera", "3")
    filtered = ranked(run_cli, queries, index, *others)
    assert filtered == ranked(run_cli, queries, tiny_gallery / "idx", *others)
    assert all(0 < len(hits) < 10 and all("_c1s" not in path for _, path in hits) for hits in filtered)
    new = tmp_path / "new" / "0009_c2s1_000001_00.png"
    new.parent.mkdir()
    Image.fromarray((np.random.default_rng(9).random((64, 32, 3)) * 255).astype(np.uint8)).save(new)
    both = (tiny_gallery / "gallery", new.parent)
    cli(run_cli, "embed", "--checkpoint", model, *both, "--out", index, "--append", "--workers", "0")
    gallery = open_gallery_dir(index, CPU)
    assert len(gallery) == 13 and count_rows(gallery.client, record["collection"]) == 13
    assert ranked(run_cli, [new], index)[0][0] == (12, str(new))


def test_a_wrong_collection_is_refused_in_one_line(run_cli, server: MilvusServer, tmp_path: Path) -> None:
    gallery = write_gallery(
        tmp_path / "a", normalised(np.random.default_rng(1).standard_normal((30, 8))), "milvus", server.uri
    )
    query = tmp_path / "q.png"
    Image.new("RGB", (32, 64)).save(query)
    record = json.loads((tmp_path / "a" / RECORD_NAME).read_text())

    def naming(collection: str) -> None:
        (tmp_path / "a" / RECORD_NAME).write_text(json.dumps({**record, "collection": collection}))

    naming("reidx_no_such_collection")
    refused(run_cli("--device", "cpu", "search", query, "--gallery", tmp_path / "a"), "has no collection", RECORD_NAME)
    client = connect(server.uri)
    client.create_collection("not_reidx", dimension=8)  # someone else's: id and vector only
    naming("not_reidx")
    refused(run_cli("--device", "cpu", "search", query, "--gallery", tmp_path / "a"), "is not a reidx gallery")
    client.delete(gallery.record.collection, filter="id >= 25")  # the index's own, changed behind its back
    naming(gallery.record.collection)
    with pytest.raises(ReidxError, match="is inconsistent .* collection \\S+ 25"):
        open_gallery_dir(tmp_path / "a", CPU)
    assert client.has_collection("not_reidx")  # reidx drops only what it wrote


def test_a_server_that_stops_mid_search_is_one_line(run_cli, server: MilvusServer, tmp_path: Path) -> None:
    vectors = normalised(np.random.default_rng(2).standard_normal((40, 8)))
    gallery = write_gallery(tmp_path / "m", vectors, "milvus", server.uri)
    assert gallery.search(vectors[:2], 3)[1][:, 0].tolist() == [0, 1]
    uri = server.uri
    server.stop()  # the gallery is open and its client connected; the next test that needs a server starts one
    started = time.monotonic()
    with pytest.raises(ReidxError, match=f"Milvus at {uri} failed searching") as failure:
        gallery.search(vectors[:2], 3)
    assert time.monotonic() - started < 60 and "\n" not in str(failure.value)
    query = tmp_path / "q.png"
    Image.new("RGB", (32, 64)).save(query)
    refused(run_cli("--device", "cpu", "search", query, "--gallery", tmp_path / "m"), uri, "running")
