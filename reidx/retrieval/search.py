"""Query a gallery index with images of any resolution, embedded exactly as the gallery was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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
from reidx.gallery.directory import HEADER_NAME, check_header_model, fingerprint_mismatch
from reidx.retrieval.inputs import UNKNOWN, identity_from_name
from reidx.retrieval.requests import EmbedJob, SearchRequest

#: What a result's scores are: cosine similarities (higher is better), or re-ranked distances (lower is better).
SIMILARITY, DISTANCE = "similarity", "distance"


@dataclass
class Hit:
    """One ranked gallery entry; ``index_id`` is its row in the index metadata."""

    rank: int
    index_id: int
    path: str
    score: float
    pid: int
    camid: int
    above_threshold: bool = True


@dataclass
class QueryResult:
    """The ranked hits of one query; ``pid`` -1 when unknown. ``min_score`` (None: no threshold) is set where
    the results are shown (:meth:`judged`)."""

    query: str
    pid: int
    camid: int
    hits: list[Hit]
    min_score: float | None = None
    score_kind: str = SIMILARITY

    @classmethod
    def build(
        cls,
        columns: Sequence[np.ndarray],
        query: str,
        pid: int,
        camid: int,
        scores: np.ndarray,
        ids: np.ndarray,
        score_kind: str = SIMILARITY,
    ) -> QueryResult:
        """The result of one query from its row of ``(scores, ids)`` (id -1: no hit) and the gallery metadata's
        ``columns`` path, pid and camid (:func:`hit_columns`); ``score_kind``: what the scores are."""
        paths, pids, camids = columns
        hits: list[Hit] = []
        for score, i in zip(scores.tolist(), ids.tolist(), strict=True):
            if i >= 0:
                hits.append(Hit(len(hits) + 1, i, str(paths[i]), score, int(pids[i]), int(camids[i])))
        return cls(query, pid, camid, hits, score_kind=score_kind)

    def judged(self, min_score: float | None) -> QueryResult:
        """This result under the threshold ``min_score``: each hit marked above it or not (None: all are).
        The threshold is one on cosine similarities: on re-ranked distances it is refused in one line."""
        if min_score is not None and self.score_kind != SIMILARITY:
            raise ReidxError(
                "--min-score is a threshold on cosine similarities; re-ranked scores are distances (lower is "
                "better) that bunch together, so a plain threshold means nothing on them",
                "drop --min-score with --rerank (or search without --rerank to apply it)",
            )
        hits = [replace(hit, above_threshold=min_score is None or hit.score >= min_score) for hit in self.hits]
        return replace(self, hits=hits, min_score=min_score)

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
            "score_kind": self.score_kind,
            "results": [asdict(hit) for hit in self.hits],
        }


def load_gallery_model(
    gallery: Gallery, model_file: str | Path | None = None, devices: Devices = AUTO, images: int | None = None
) -> Embedder:
    """The embedder of ``gallery``'s model: the file its header names, or ``model_file`` (a checkpoint, or a
    ``reidx export`` ONNX file run by onnxruntime), in the gallery's mode; ``images``: how many queries it will
    embed, when known. A model that embeds differently (other checkpoint bytes, mode or input size) is refused."""
    path = Path(model_file or gallery.header.checkpoint)
    if model_file is None and not path.is_file():
        raise ReidxError(
            f"the model file recorded in {gallery.directory / HEADER_NAME} is missing: {path}",
            "pass --checkpoint (or --model-file) with that model's file",
        )
    onnx = not is_checkpoint(path)
    if not onnx:
        check_header_model(gallery.header, gallery.directory / HEADER_NAME)
    embedder = open_embedder(path, None if onnx else gallery.header.mode, devices, images=images)
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
    directory: str | Path, model_file: str | Path | None = None, devices: Devices = AUTO, images: int | None = None
) -> tuple[Gallery, Embedder]:
    """The index, whatever its backend (FAISS on the GPUs when ``devices.faiss_gpu``), and its model's embedder
    (on ``devices.torch``) for ``images`` queries (None: not known, as in a service)."""
    gallery = open_gallery_dir(directory, devices)
    return gallery, load_gallery_model(gallery, model_file, devices, images)


def rank_vectors(
    gallery: Gallery, vectors: np.ndarray, queries: Sequence[str], request: SearchRequest = SearchRequest()
) -> list[QueryResult]:
    """Search ``vectors`` (one row per query named in ``queries``) as ``request`` says and attach the gallery
    metadata to the hits."""
    queries = [str(query) for query in queries]
    identities = [identity_from_name(query) for query in queries]
    pids = [pid if request.query_pid is None else request.query_pid for pid, _ in identities]
    camids = [camid if request.query_camid is None else request.query_camid for _, camid in identities]
    if request.query_expansion:
        from reidx.retrieval.expansion import average_query_expansion
        from reidx.retrieval.rerank.stored import gallery_vectors

        expanded = gallery_vectors(gallery, "--query-expansion")
        vectors = average_query_expansion(gallery.check_queries(vectors), expanded, request.query_expansion)
    kind = SIMILARITY
    if request.rerank:
        scores, ids = reranked(gallery, vectors, request)
        kind = DISTANCE
    elif request.filters.active:
        scores, ids = gallery.search_filtered(vectors, request.k, request.filters, camids, queries, request.nprobe)
    else:
        scores, ids = gallery.search(vectors, request.k, request.nprobe)
    columns = hit_columns(gallery)
    rows = zip(queries, pids, camids, scores, ids, strict=True)
    return [QueryResult.build(columns, *row, score_kind=kind) for row in rows]


def reranked(gallery: Gallery, vectors: np.ndarray, request: SearchRequest) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, ids)`` of each query re-ranked online against the index's stored gallery part: the
    published algorithm on gallery ∪ {query}, exact (:class:`reidx.retrieval.rerank.GalleryRerank`)."""
    from reidx.retrieval.rerank.stored import open_rerank

    if request.filters.active:
        raise ReidxError("--rerank does not combine with gallery filters yet", "drop --camera/--pid/--other-cameras")
    graph = open_rerank(gallery, request.k1, request.k2, request.lam)
    found = [graph.query(row, request.k) for row in gallery.check_queries(vectors)]
    width = min(request.k, len(gallery))
    ids = np.array([row[0] for row in found], np.int64).reshape(len(found), width)
    return np.array([row[1] for row in found]).reshape(len(found), width), ids


def hit_columns(gallery: Gallery) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The metadata columns a hit shows: path, pid, camid."""
    columns = gallery.columns
    return columns["path"], columns["pid"], columns["camid"]


def search_images(
    gallery: Gallery,
    model: LoadedModel | Embedder,
    queries: Sequence[str | Path],
    request: SearchRequest = SearchRequest(),
    job: EmbedJob = EmbedJob(),
) -> list[QueryResult]:
    """Embed the query images in batches (the gallery's mode and input size) with ``model`` (a loaded
    checkpoint or an embedder) as ``job`` says, and rank the gallery as ``request`` says."""
    paths = [str(query) for query in queries]
    vectors = embed_paths(model, paths, gallery.header.mode, job.batch_size, job.workers)
    return rank_vectors(gallery, vectors, paths, request)


def print_results(results: Sequence[QueryResult]) -> None:
    """One rich table per query: rank, score, pid, camid, path (hits under ``--min-score`` dimmed: see
    :meth:`QueryResult.judged`)."""
    verdict = {
        None: None,
        True: "best score reaches --min-score",
        False: "not in gallery (below --min-score)",
    }
    for result in results:
        title = f"query {result.query}" + (f" (pid {result.pid})" if result.pid != UNKNOWN else "")
        plain = result.score_kind == SIMILARITY
        title += "" if plain else " — re-ranked: distance, lower is better"
        table = Table(title=title, caption=verdict[result.in_gallery], title_justify="left")
        for name in ("rank", "score" if plain else "distance", "pid", "camid"):
            table.add_column(name, justify="right")
        table.add_column("path", overflow="fold")
        for hit in result.hits:
            style = None if hit.above_threshold else "dim"
            match = result.pid != UNKNOWN and hit.pid == result.pid
            pid = Text(str(hit.pid), style="green" if match else "")
            table.add_row(str(hit.rank), f"{hit.score:.4f}", pid, str(hit.camid), hit.path, style=style)
        console.print(table)
