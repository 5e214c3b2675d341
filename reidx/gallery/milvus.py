"""The Milvus backend: the vectors in a Milvus collection, reached through pymilvus.

``--uri FILE.db`` runs Milvus Lite (embedded, one process at a time per file); ``--uri http://HOST:19530``
talks to a Milvus standalone or cluster with the same code (token, if any, from ``$MILVUS_TOKEN``; never
stored). The index directory keeps the header and metadata and names the collection in ``backend.json``.
Milvus Lite writes a lock file beside its file even to search, so its folder must be writable; the file itself
is an SQLite database, which is how a damaged one is told apart from one that is busy or unreachable.

A collection holds ``id`` (= metadata row), ``vector``, ``pid`` and ``camid`` (for filters). A new or
``--overwrite`` build fills a fresh collection (the name in ``backend.json`` plus a generation suffix) and
drops the directory's older ones only once the directory points at it, so a failed run leaves the old
index as it was; ``--append`` inserts ids after the header's count, first deleting any an interrupted
append left there. Collections are tagged with their directory, and reidx drops only those.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sqlite3
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidx.device import Devices
from reidx.errors import ReidxError, one_line
from reidx.gallery.base import BACKENDS, Gallery, GalleryWrite
from reidx.gallery.directory import (
    METADATA_NAME,
    RECORD_NAME,
    BackendRecord,
    IndexHeader,
    MetadataColumns,
    rebuild_hint,
    write_directory,
)
from reidx.gallery.layout import PQ_BITS
from reidx.gallery.ranking import clamp_k, top_k
from reidx.options import option

if TYPE_CHECKING:
    import pandas as pd

    from reidx.gallery.filters import GalleryFilter

TOKEN_ENV = "MILVUS_TOKEN"
#: Milvus answers at most this many hits per query (its ``limit`` cap).
MAX_HITS = 16384
#: Bytes of vectors per insert call (Milvus Lite slows down sharply past a few MB a call) and queries per search call.
INSERT_BYTES = 1 << 20
QUERY_BATCH = 256
#: The fields of a reidx gallery's collection.
FIELDS = {"id", "vector", "pid", "camid"}
REMOTE = ("http://", "https://", "tcp://", "grpc://")
REBUILD = rebuild_hint(BackendRecord("milvus"))
#: Milvus Lite's rule for its file names.
LITE_NAME = re.compile(r"[A-Za-z0-9.\-_]{1,36}")


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a Milvus server (else a Milvus Lite file)."""
    return uri.startswith(REMOTE)


def resolve_uri(uri: str | None, out: Path) -> str:
    """The URI to record: a server's as given, a Milvus Lite file's absolute path (not inside ``out``)."""
    if not uri:
        raise ReidxError("--backend milvus needs --uri", "pass --uri gallery.db (Milvus Lite) or http://HOST:19530")
    if is_remote(uri):
        return uri
    path = Path(uri).expanduser().resolve()
    if path.suffix != ".db":
        raise ReidxError(
            f"--uri {uri} is neither a Milvus Lite .db file nor a server", "use FILE.db or http://HOST:PORT"
        )
    if path.is_relative_to(out.expanduser().resolve()):
        raise ReidxError(f"--uri {uri} lies inside --out {out}", "keep the Milvus Lite file outside the index folder")
    check_lite_file(path)
    return str(path)


def check_lite_file(path: Path) -> None:
    """Refuse, before Milvus Lite starts on it, a file it cannot use: a name it rejects, no folder, a folder
    in its place, or a read-only folder or file (it writes a lock file beside the file even to search)."""
    if not LITE_NAME.fullmatch(path.name):
        raise ReidxError(
            f"Milvus Lite cannot use the file name {path.name!r} ({path})",
            "name it with letters, digits, '.', '-' and '_' only, at most 36 characters, e.g. gallery.db",
        )
    if not path.parent.is_dir():
        raise ReidxError(f"no folder {path.parent} for the Milvus Lite file {path}", "create the folder first")
    if path.exists() and not path.is_file():
        raise ReidxError(f"{path} is not a Milvus Lite file", "pass --uri FILE.db naming a file")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise ReidxError(
            f"Milvus Lite cannot write beside {path}: the folder or file is read-only",
            f"make {path.parent} and the file writable (Milvus Lite writes a lock file there even to search)",
        )


def default_collection(out: Path) -> str:
    """A collection name of the output folder's name and a hash of its absolute path."""
    target = out.expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9_]", "_", target.name)[:40]
    return f"reidx_{stem}_{hashlib.sha256(str(target).encode()).hexdigest()[:8]}"


def owner_tag(directory: Path) -> str:
    """The description marking a collection as the vectors of the index directory ``directory``."""
    return f"reidx index {directory.expanduser().resolve()}"


def short(exc: BaseException) -> str:
    """An exception as one short line (pymilvus errors carry a code and a message)."""
    message = getattr(exc, "message", None) or str(exc)
    return one_line(message, 200)


def connect(uri: str) -> Any:
    """A pymilvus client for ``uri``; an unreachable server or unusable file is a one-line ReidxError."""
    if not is_remote(uri):
        check_lite_file(Path(uri))
    with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        from pymilvus import MilvusClient

        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its refusals reach the user as ReidxErrors

        with quiet_engine() as notes:
            try:
                return MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
            except Exception as exc:  # noqa: BLE001 - pymilvus raises several kinds; all mean "cannot connect"
                reason = "; ".join([*notes, short(exc)])
        if not is_remote(uri):
            raise lite_failure(Path(uri), reason) from None
        raise ReidxError(
            f"cannot reach Milvus at {uri}: {reason}", "check that the server is running and the address is right"
        ) from None


class Notes(logging.Handler):
    """Collects log records' messages as short lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(one_line(record.getMessage(), 200))


@contextmanager
def quiet_engine() -> Iterator[list[str]]:
    """While a client starts: what Milvus Lite logs (on the root logger) is collected in the yielded list, and
    the server process it starts inherits a stderr that goes nowhere (its own log lines are not reidx's one line)."""
    root, handler = logging.getLogger(), Notes()
    root.addHandler(handler)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield handler.lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        root.removeHandler(handler)


def lite_failure(path: Path, reason: str) -> ReidxError:
    """Why Milvus Lite could not open ``path``, as one line with the fix: busy, damaged, or its own reason."""
    if "opened by another program" in reason:
        return ReidxError(
            f"Milvus Lite file {path} is open in another process",
            "wait for that process to finish (Milvus Lite opens a file in one process at a time), or use a server",
        )
    damage = sqlite_damage(path)
    if damage:
        return ReidxError(
            f"Milvus Lite file {path} is damaged ({damage})",
            "restore it from a copy, or rebuild the index into a new file with "
            "`reidx embed ... --backend milvus --uri NEW.db --out DIR --overwrite`",
        )
    return ReidxError(f"Milvus Lite cannot open {path}: {reason}", "see its message")


def sqlite_damage(path: Path) -> str | None:
    """What SQLite (the format of a Milvus Lite file) finds wrong with ``path``, read-only; None if nothing."""
    if not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.OperationalError:
        return None  # busy or unreadable, not known to be damaged
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if found and found[0] == "ok" else str(found[0] if found else "no answer")


@contextmanager
def engine_errors(uri: str, doing: str) -> Iterator[None]:
    """Any failure of the engine while ``doing`` is one line (a server that stopped, a dropped collection)."""
    try:
        yield
    except ReidxError:
        raise
    except Exception as exc:  # noqa: BLE001 - pymilvus and grpc raise several kinds
        where = "the server" if is_remote(uri) else "Milvus Lite"
        raise ReidxError(
            f"Milvus at {uri} failed {doing}: {short(exc)}",
            f"check that {where} is running and holds the collection, then run the command again",
        ) from None


def index_params(client: Any, header: IndexHeader) -> Any:
    """The vector index of a collection: FLAT (exact) or IVF_PQ with the header's parameters."""
    params = client.prepare_index_params()
    if header.index_type == "ivfpq":
        build = {"nlist": header.params["nlist"], "m": header.params["pq_m"], "nbits": PQ_BITS}
        params.add_index("vector", index_type="IVF_PQ", metric_type="IP", params=build)
    else:
        params.add_index("vector", index_type="FLAT", metric_type="IP")
    return params


def create_collection(client: Any, name: str, header: IndexHeader, owner: str) -> None:
    """An empty collection (id, vector, pid, camid) with its vector index, strongly consistent."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=owner)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=header.dim)
    schema.add_field("pid", DataType.INT64)
    schema.add_field("camid", DataType.INT64)
    client.create_collection(name, schema=schema, index_params=index_params(client, header), consistency_level="Strong")


def insert_rows(client: Any, name: str, chunks: Sequence[Path], metadata: pd.DataFrame, start: int) -> int:
    """Insert the chunks' vectors as ids ``start``, ``start + 1``, ... with their rows' pid and camid."""
    pids, camids = metadata["pid"].to_numpy(np.int64), metadata["camid"].to_numpy(np.int64)
    at = start
    for chunk in chunks:
        vectors = np.load(chunk)
        step = max(1, INSERT_BYTES // max(1, vectors.nbytes // max(1, len(vectors))))
        for low in range(0, len(vectors), step):
            rows = range(at + low, at + min(low + step, len(vectors)))
            block = vectors[low : low + len(rows)]
            client.insert(
                name,
                [
                    {"id": i, "vector": vector, "pid": int(pids[i]), "camid": int(camids[i])}
                    for i, vector in zip(rows, block, strict=True)
                ],
            )
        at += len(vectors)
    return at - start


def count_rows(client: Any, name: str, expr: str = "") -> int:
    """The number of entities in a collection (deleted ones excluded) that pass ``expr``."""
    found = client.query(name, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
    return int(found[0]["count(*)"])


def drop_older(client: Any, prefix: str, owner: str, keep: str) -> None:
    """Drop this directory's other collections (``prefix``-named, tagged ``owner``): replaced or orphaned."""
    for name in client.list_collections():
        if name != keep and name.startswith(prefix) and client.describe_collection(name).get("description") == owner:
            client.drop_collection(name)


def expression(conditions: Sequence[tuple[str, bool, Sequence[int]]]) -> str:
    """A Milvus boolean filter for metadata conditions ``(column, keep, values)``: all must hold."""
    tests = (f"{column} {'in' if keep else 'not in'} {[int(v) for v in values]}" for column, keep, values in conditions)
    return " and ".join(tests)


@BACKENDS.register("milvus")
class MilvusGallery(Gallery):
    """An index directory whose vectors are a Milvus collection (Milvus Lite file or server)."""

    @dataclass(frozen=True)
    class Options:
        """Where a new gallery's collection goes."""

        uri: str | None = option(None, "milvus: FILE.db (Milvus Lite) or http://HOST:19530.")
        collection: str | None = option(None, "milvus: collection name prefix (default: --out's).")

    def __init__(
        self, directory: Path, header: IndexHeader, columns: MetadataColumns, record: BackendRecord, client: Any
    ) -> None:
        super().__init__(directory, header, columns, record)
        self.client = client
        #: Rows past the header's count (an append in progress, or one killed before it wrote the directory)
        #: are left out of every search.
        self.bound = ""

    @classmethod
    def new_record(cls, out: Path, options: MilvusGallery.Options) -> BackendRecord:
        """A collection at ``options.uri`` named ``options.collection`` (default: from ``out``)."""
        collection = options.collection
        if collection is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", collection):
            raise ReidxError(f"--collection {collection!r} is not a Milvus name", "use letters, digits and _ only")
        return BackendRecord(cls.name, resolve_uri(options.uri, out), collection or default_collection(out))

    @classmethod
    def open_vectors(
        cls, directory: Path, header: IndexHeader, columns: MetadataColumns, record: BackendRecord, devices: Devices
    ) -> MilvusGallery:
        client = connect(record.uri)
        name = record.collection
        with engine_errors(record.uri, f"opening collection {name!r}"):
            known = client.has_collection(name)
        if not known:
            where = f"named by {directory / RECORD_NAME}"
            raise ReidxError(f"Milvus at {record.uri} has no collection {name!r} ({where})", REBUILD)
        with engine_errors(record.uri, f"opening collection {name!r}"):
            fields = {field["name"]: field for field in client.describe_collection(name)["fields"]}
        if not FIELDS <= fields.keys():
            raise ReidxError(
                f"collection {name!r} at {record.uri} (named by {directory / RECORD_NAME}) is not a reidx gallery: "
                f"its fields are {sorted(fields)}",
                REBUILD,
            )
        try:
            client.load_collection(name)
            count = count_rows(client, name, f"id < {header.count}")
            extra = count_rows(client, name) - count
        except Exception as exc:  # noqa: BLE001 - any engine failure here is one line to the user
            raise ReidxError(f"cannot open Milvus collection {name!r} at {record.uri}: {short(exc)}", REBUILD) from None
        dim = fields["vector"].get("params", {}).get("dim")
        if count != header.count or len(columns) != header.count or int(dim or 0) != header.dim:
            raise ReidxError(
                f"index {directory} is inconsistent (entries: header.json {header.count}, {METADATA_NAME} "
                f"{len(columns)}, collection {name} {count}; dim {dim})",
                f"re-run the interrupted `reidx embed ... --append`, or {REBUILD[0].lower()}{REBUILD[1:]}",
            )
        gallery = cls(directory, header, columns, record, client)
        gallery.bound = f"id < {header.count}" if extra else ""
        return gallery

    @classmethod
    def write(cls, job: GalleryWrite) -> None:
        job.check_chunks()  # Milvus Lite pads or cuts vectors of another length without a word
        appending = isinstance(job.existing, MilvusGallery)
        client = job.existing.client if appending else connect(job.record.uri)
        owner = owner_tag(job.out)
        start = job.existing.header.count if appending else 0
        name = job.record.collection if appending else f"{job.record.collection}_{secrets.token_hex(4)}"
        try:
            if appending:
                client.delete(name, filter=f"id >= {start}")  # what an interrupted append left
            else:
                create_collection(client, name, job.header, owner)
            added = insert_rows(client, name, job.chunks, job.metadata, start)
            client.flush(name)
        except Exception as exc:  # noqa: BLE001 - an engine refusal (e.g. an index type Lite lacks) is one line
            cls.undo(client, name, appending, start)
            reason = short(exc)
            raise ReidxError(f"Milvus at {job.record.uri} refused the gallery: {reason}", "see its message") from None
        job.header.count = start + added
        try:
            write_directory(job.out, job.header, job.metadata, BackendRecord(cls.name, job.record.uri, name))
        except BaseException:
            cls.undo(client, name, appending, start)
            raise
        if not appending:
            drop_older(client, job.record.collection + "_", owner, keep=name)

    @staticmethod
    def undo(client: Any, name: str, appending: bool, start: int) -> None:
        """Remove what a failed write added: the new rows of an append, or the whole new collection."""
        try:
            if appending:
                client.delete(name, filter=f"id >= {start}")
            elif client.has_collection(name):
                client.drop_collection(name)
        except Exception:  # noqa: BLE001, S110 - best effort; the next run cleans up the same way
            pass

    def search(
        self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, expr: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tie-exact top k (the FAISS path's re-fetch rule, :func:`reidx.gallery.ranking.top_k`), among the
        entries ``expr`` (a Milvus boolean filter) lets through; at most ``MAX_HITS - 1`` hits."""
        queries = self.check_queries(queries)
        k = clamp_k(k, min(self.header.count, MAX_HITS - 1))
        expr = " and ".join(f"({part})" for part in (expr, self.bound) if part)
        return top_k(MilvusSearch(self, nprobe, expr).search, queries, k, self.header.count)

    def search_filtered(
        self,
        queries: np.ndarray,
        k: int,
        filters: GalleryFilter,
        camids: Sequence[int],
        names: Sequence[str],
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The filters as Milvus boolean expressions, one search per distinct query camera."""
        queries = self.check_queries(queries)
        k = clamp_k(k, min(self.header.count, MAX_HITS - 1))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        cameras = np.asarray(camids)
        for camid in dict.fromkeys(camids):
            rows = np.flatnonzero(cameras == camid)
            expr = expression(filters.conditions(camid, names[rows[0]]))
            scores[rows], ids[rows] = self.search(queries[rows], k, nprobe, expr)
        return scores, ids


class MilvusSearch:
    """``search(queries, n)`` over one collection with a fixed filter, shaped like a FAISS index's."""

    def __init__(self, gallery: MilvusGallery, nprobe: int | None, expr: str) -> None:
        self.gallery, self.expr = gallery, expr
        params: dict[str, Any] = {}
        if gallery.header.index_type == "ivfpq":
            params["nprobe"] = nprobe or gallery.header.params["nprobe"]
        self.params = {"metric_type": "IP", "params": params}

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (Q, min(n, MAX_HITS)), padded with -inf / -1 where fewer entries pass."""
        n = min(n, MAX_HITS)
        scores = np.full((len(queries), n), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), n), -1, dtype=np.int64)
        record = self.gallery.record
        for low, rows in batches(len(queries), QUERY_BATCH):
            with engine_errors(record.uri, f"searching collection {record.collection!r}"):
                found = self.gallery.client.search(
                    record.collection,
                    data=list(queries[low : low + rows]),
                    limit=n,
                    filter=self.expr,
                    search_params=self.params,
                    consistency_level="Strong",
                )
            for row, hits in enumerate(found, start=low):
                ids[row, : len(hits)] = [hit["id"] for hit in hits]
                scores[row, : len(hits)] = [hit["distance"] for hit in hits]
        return scores, ids


def batches(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, rows)`` of consecutive batches of at most ``size`` over ``total`` items."""
    for low in range(0, total, size):
        yield low, min(size, total - low)
