"""Query a gallery index with images of any resolution, embedded exactly as the gallery was."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from reidx.checkpoint import LoadedModel, load_model
from reidx.console import console
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths
from reidx.gallery import Gallery, open_gallery_dir
from reidx.retrieval.filters import NO_FILTER, GalleryFilter
from reidx.retrieval.index import HEADER_NAME
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


def load_gallery_model(
    gallery: Gallery, checkpoint: str | Path | None = None, device: torch.device | str = "cpu"
) -> LoadedModel:
    """The model that built ``gallery`` (the checkpoint its header names, or ``checkpoint``); a checkpoint
    with other bytes than the one the gallery was embedded with is refused."""
    path = Path(checkpoint or gallery.header.checkpoint)
    if checkpoint is None and not path.is_file():
        raise ReidxError(
            f"the checkpoint recorded in {gallery.directory / HEADER_NAME} is missing: {path}",
            "pass --checkpoint with that model's file",
        )
    loaded = load_model(path, device)
    expected = gallery.header.fingerprint["checkpoint_sha256"]
    if loaded.fingerprint != expected:
        raise ReidxError(
            f"{path} is not the checkpoint {gallery.directory} was embedded with "
            f"(sha256 {loaded.fingerprint[:12]}… vs {expected[:12]}…)",
            "pass that checkpoint, or re-embed the gallery with this one",
        )
    return loaded


def open_gallery(
    directory: str | Path, checkpoint: str | Path | None = None, devices: Devices = AUTO
) -> tuple[Gallery, LoadedModel]:
    """The index, whatever its backend (FAISS on the GPUs when ``devices.faiss_gpu``), and its model (on
    ``devices.torch``)."""
    gallery = open_gallery_dir(directory, devices)
    return gallery, load_gallery_model(gallery, checkpoint, devices.torch)


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
    loaded: LoadedModel,
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
    """Embed the query images in batches (the gallery's mode and input size) and rank the gallery."""
    paths = [str(query) for query in queries]
    vectors = embed_paths(loaded, paths, gallery.header.mode, batch_size, workers)
    return rank_vectors(gallery, vectors, paths, k, nprobe, min_score, query_pid, filters, query_camid)


def results_json(results: Sequence[QueryResult]) -> str:
    """Machine-readable results: one object per query with its ranked ``results`` list."""
    return json.dumps([result.to_dict() for result in results], indent=2)


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
            pid = f"[green]{hit.pid}[/]" if match else str(hit.pid)
            table.add_row(str(hit.rank), f"{hit.score:.4f}", pid, str(hit.camid), hit.path, style=style)
        console.print(table)
