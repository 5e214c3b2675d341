"""Query a gallery index with images of any resolution, embedded exactly as the gallery was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from reidx.checkpoint import LoadedModel
from reidx.console import console
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths
from reidx.evaluation.embedders import Embedder, is_checkpoint, open_embedder
from reidx.gallery import Gallery, open_gallery_dir
from reidx.retrieval.filters import NO_FILTER, GalleryFilter
from reidx.retrieval.index import HEADER_NAME, check_header_model, fingerprint_mismatch
from reidx.retrieval.inputs import UNKNOWN, identity_from_name


@dataclass
class Hit:
    """One ranked gallery entry; ``index_id`` is its row in the index metadata."""

    rank: int
    index_id: int
    path: str
    score: float
    pid: int
    camid: int
    above_threshold: bool


@dataclass
class QueryResult:
    """The ranked hits of one query; ``pid`` -1 when unknown."""

    query: str
    pid: int
    camid: int
    hits: list[Hit]
    min_score: float | None = None

    @property
    def in_gallery(self) -> bool | None:
        """Whether the best hit reaches ``min_score`` (None without a threshold)."""
        if self.min_score is None:
            return None
        return bool(self.hits) and self.hits[0].score >= self.min_score

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "pid": self.pid,
            "camid": self.camid,
            "min_score": self.min_score,
            "in_gallery": self.in_gallery,
            "results": [asdict(hit) for hit in self.hits],
        }


def load_gallery_model(gallery: Gallery, model_file: str | Path | None = None, devices: Devices = AUTO) -> Embedder:
    """The embedder of ``gallery``'s model: the file its header names, or ``model_file`` (a checkpoint, or a
    ``reidx export`` ONNX file run by onnxruntime), in the gallery's mode. A model that embeds differently
    (other checkpoint bytes, mode or input size) is refused."""
    path = Path(model_file or gallery.header.checkpoint)
    if model_file is None and not path.is_file():
        raise ReidxError(
            f"the model file recorded in {gallery.directory / HEADER_NAME} is missing: {path}",
            "pass --checkpoint (or --model-file) with that model's file",
        )
    onnx = not is_checkpoint(path)
    if not onnx:
        check_header_model(gallery.header, gallery.directory / HEADER_NAME)
    embedder = open_embedder(path, None if onnx else gallery.header.mode, devices)
    mismatch = fingerprint_mismatch(gallery.header.fingerprint, embedder.fingerprint())
    if mismatch:
        check_header_model(gallery.header, gallery.directory / HEADER_NAME)
        what = "the model" if onnx else "the checkpoint"
        raise ReidxError(
            f"{path} is not {what} {gallery.directory} was embedded with ({mismatch})",
            f"pass that checkpoint or its `reidx export --mode {gallery.header.mode}` file, "
            "or re-embed the gallery with this model",
        )
    return embedder


def open_gallery(
    directory: str | Path, model_file: str | Path | None = None, devices: Devices = AUTO
) -> tuple[Gallery, Embedder]:
    """The index, whatever its backend (FAISS on the GPUs when ``devices.faiss_gpu``), and its model's embedder
    (on ``devices.torch``)."""
    gallery = open_gallery_dir(directory, devices)
    return gallery, load_gallery_model(gallery, model_file, devices)


def rank_vectors(
    gallery: Gallery,
    vectors: np.ndarray,
    queries: Sequence[str],
    k: int = 10,
    nprobe: int | None = None,
    min_score: float | None = None,
    query_pid: int | None = None,
    filters: GalleryFilter = NO_FILTER,
    query_camid: int | None = None,
) -> list[QueryResult]:
    """Search ``vectors`` (one row per query path), only among the entries ``filters`` lets through, and
    attach the gallery metadata to the hits. A query's pid and camid come from its name unless given."""
    queries = [str(query) for query in queries]
    identities = [identity_from_name(query) for query in queries]
    query_pids = [pid if query_pid is None else query_pid for pid, _ in identities]
    query_camids = [camid if query_camid is None else query_camid for _, camid in identities]
    if filters.active:
        scores, ids = gallery.search_filtered(vectors, k, filters, query_camids, queries, nprobe)
    else:
        scores, ids = gallery.search(vectors, k, nprobe)
    meta = gallery.metadata
    paths, pids, camids = meta["path"].to_numpy(), meta["pid"].to_numpy(), meta["camid"].to_numpy()
    results = []
    for query, pid, camid, row_scores, row_ids in zip(queries, query_pids, query_camids, scores, ids, strict=True):
        hits: list[Hit] = []
        for score, i in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
            if i >= 0:
                above = min_score is None or score >= min_score
                hits.append(Hit(len(hits) + 1, i, str(paths[i]), score, int(pids[i]), int(camids[i]), above))
        results.append(QueryResult(query, pid, camid, hits, min_score))
    return results


def search_images(
    gallery: Gallery,
    model: LoadedModel | Embedder,
    queries: Sequence[str | Path],
    k: int = 10,
    nprobe: int | None = None,
    min_score: float | None = None,
    query_pid: int | None = None,
    batch_size: int = 64,
    workers: int = 2,
    filters: GalleryFilter = NO_FILTER,
    query_camid: int | None = None,
) -> list[QueryResult]:
    """Embed the query images in batches (the gallery's mode and input size) with ``model`` (a loaded
    checkpoint or an embedder) and rank the gallery."""
    paths = [str(query) for query in queries]
    vectors = embed_paths(model, paths, gallery.header.mode, batch_size, workers)
    return rank_vectors(gallery, vectors, paths, k, nprobe, min_score, query_pid, filters, query_camid)


def print_results(results: Sequence[QueryResult]) -> None:
    """One rich table per query: rank, score, pid, camid, path (hits under ``--min-score`` dimmed)."""
    verdict = {
        None: None,
        True: "best score reaches --min-score",
        False: "not in gallery (below --min-score)",
    }
    for result in results:
        title = f"query {result.query}" + (f" (pid {result.pid})" if result.pid != UNKNOWN else "")
        table = Table(title=title, caption=verdict[result.in_gallery], title_justify="left")
        for name in ("rank", "score", "pid", "camid"):
            table.add_column(name, justify="right")
        table.add_column("path", overflow="fold")
        for hit in result.hits:
            style = None if hit.above_threshold else "dim"
            match = result.pid != UNKNOWN and hit.pid == result.pid
            pid = Text(str(hit.pid), style="green" if match else "")
            table.add_row(str(hit.rank), f"{hit.score:.4f}", pid, str(hit.camid), hit.path, style=style)
        console.print(table)
