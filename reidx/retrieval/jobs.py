"""Resumable embedding jobs for ``reidx embed``: the vectors of :func:`reidx.evaluation.embed.iter_embeddings`,
persisted in chunks under a state folder so that an interrupted run, started again with the same model,
mode and image list, continues where it stopped.

Nothing unverified enters an index. Every chunk is checked before it is written (finite unit vectors:
:func:`bad_rows`) and named with the SHA-256 of its bytes (``chunk-START-END-SHA256.npy``, so the checksum
arrives with the chunk in one rename); a resumed job keeps only the chunks whose bytes still match their
names, re-embeds the images of any other (with a note naming it), and ``build_index`` checks every vector
once more before a backend stores it (:func:`check_chunks`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reidx.console import err_console
from reidx.errors import ReidxError
from reidx.evaluation.embed import iter_embeddings, progress_counter
from reidx.evaluation.embedders import Embedder
from reidx.gallery.base import read_chunk_shape
from reidx.io import atomic_path, sha256_file, write_checksummed, writing
from reidx.retrieval.requests import EmbedJob

JOB_NAME = "job.json"
CHUNK_GLOB = "chunk-*.npy"
CHUNK_NAME = re.compile(r"^chunk-(?P<start>\d{10})-(?P<end>\d{10})-(?P<sha256>[0-9a-f]{64})\.npy$")
#: How far an embedding's L2 norm may be from 1 (float32 rounding is far below it).
NORM_TOLERANCE = 1e-3
NON_FINITE_FIX = "nothing of them was stored; embed with another model file (e.g. an earlier checkpoint of its run)"
#: At most this many image paths in one message.
PATHS_SHOWN = 3


def embed_to_chunks(
    embedder: Embedder,
    paths: Sequence[str],
    state_dir: Path,
    job: EmbedJob = EmbedJob(),
    show: bool = True,
) -> list[Path]:
    """Embed ``paths`` into checksummed chunk files under ``state_dir``, keeping the verified chunks a previous
    run of the same job left there and embedding the images no chunk covers; returns the chunk files covering
    every path, in path order.

    A chunk is written as ``job`` says, always at a batch boundary (so a resumed run batches the rest exactly
    as an uninterrupted one would). A batch that is not finite unit vectors stops the job with one line
    naming its images. ``show``: the progress bar.
    """
    chunks = resume_chunks(state_dir, job_key(embedder, paths), len(paths))
    gaps = missing_spans(chunks, len(paths))
    done = len(paths) - sum(end - start for start, end in gaps)
    with progress_counter(len(paths), done, "embedding", show=show) as advance:
        for first, last in gaps:
            pending: list[np.ndarray] = []
            start = position = first
            flushed = time.monotonic()
            for vectors in iter_embeddings(embedder, paths[first:last], batch_size=job.batch_size, workers=job.workers):
                pending.append(vectors)
                position += len(vectors)
                done += len(vectors)
                advance(len(vectors))
                due = time.monotonic() - flushed >= job.flush_seconds
                if position - start >= job.chunk_size or position == last or due:
                    block = np.concatenate(pending)
                    refuse_bad_rows(block, paths[start:position], f"{embedder.source} gives", NON_FINITE_FIX)
                    chunks.append(write_chunk(state_dir, start, block))
                    pending, start, flushed = [], position, time.monotonic()
                    if job.on_chunk is not None:
                        job.on_chunk(done)
    return sorted(chunks, key=lambda chunk: chunk.name)  # zero-padded starts: name order is path order


def job_key(embedder: Embedder, paths: Sequence[str]) -> str:
    """A hash naming one embedding job: model fingerprint, mode, input size and the exact path list."""
    job = {"fingerprint": embedder.fingerprint(), "paths": list(map(str, paths))}
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def resume_chunks(state_dir: Path, key: str, total: int) -> list[Path]:
    """The verified chunks left by the same job, in order (there may be gaps between them); everything else
    is discarded: another job's state entirely, and any chunk whose bytes do not match its checksum, that
    overlaps another or holds another shape, with a note naming it (its images are embedded again)."""
    job_file = state_dir / JOB_NAME
    job = {"key": key, "total": total}
    try:
        same = json.loads(job_file.read_text()) == job
    except (OSError, ValueError):
        same = False
    if not same:
        if state_dir.is_symlink() or state_dir.is_file():
            state_dir.unlink()
        shutil.rmtree(state_dir, ignore_errors=True)
        with writing(state_dir):
            state_dir.mkdir(parents=True)
        try:
            with atomic_path(job_file) as tmp:
                tmp.write_text(json.dumps(job))
        except BaseException:
            state_dir.rmdir()  # nothing to resume: leave nothing
            raise
        return []
    chunks: list[Path] = []
    end, dim = 0, None
    for chunk in sorted(state_dir.glob(CHUNK_GLOB)):
        span = chunk_range(chunk)
        problem = chunk_problem(chunk, end, total, dim)
        if problem is None:
            chunks.append(chunk)
            end, dim = span[1], read_chunk_shape(chunk)[1]
            continue
        images = f"its images {span[0]} to {span[1] - 1}" if span else "the images it held"
        note = f"note: discarded the embedding chunk {chunk}: {problem}; {images} are embedded again"
        err_console.print(note, highlight=False, soft_wrap=True)
        chunk.unlink()
    return chunks


def chunk_problem(chunk: Path, covered: int, total: int, dim: int | None) -> str | None:
    """Why a chunk file of a job of ``total`` images cannot be kept after chunks covering up to ``covered``
    with ``dim``-d vectors; None when it can."""
    span = chunk_range(chunk)
    if span is None:
        return "its name carries no checksum (a chunk of an older reidx, or not a chunk)"
    if span[0] < covered or not span[0] < span[1] <= total:
        return f"it covers images {span[0]} to {span[1] - 1}, which overlap another chunk or are not in the job"
    try:
        digest = sha256_file(chunk)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if digest != CHUNK_NAME.match(chunk.name)["sha256"]:
        return "its bytes do not match its checksum (damaged)"
    shape = read_chunk_shape(chunk)
    if shape is None or shape[0] != span[1] - span[0] or dim not in (None, shape[1]):
        return "it does not hold float32 rows of the job's images"
    return None


def missing_spans(chunks: Sequence[Path], total: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` image ranges of ``total`` that no chunk of ``chunks`` (in order) covers."""
    spans, covered = [], 0
    for start, end in (chunk_range(chunk) for chunk in chunks):
        if start > covered:
            spans.append((covered, start))
        covered = end
    return spans + ([(covered, total)] if covered < total else [])


def chunk_range(chunk: Path) -> tuple[int, int] | None:
    """``(start, end)`` path indices covered by a chunk file, None for a name reidx did not write."""
    match = CHUNK_NAME.match(chunk.name)
    return (int(match["start"]), int(match["end"])) if match else None


def write_chunk(state_dir: Path, start: int, vectors: np.ndarray) -> Path:
    """Save one chunk atomically (a crash never leaves a truncated chunk), named with its bytes' SHA-256."""
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    return write_checksummed(state_dir, f"chunk-{start:010d}-{start + len(vectors):010d}", ".npy", buffer.getvalue())


def bad_rows(vectors: np.ndarray) -> np.ndarray:
    """The indices of the rows that are not finite unit vectors (NaN, inf, zero, or not L2-normalised):
    what no embedder gives and no index may hold."""
    norms = np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1)
    return np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOLERANCE))


def refuse_bad_rows(vectors: np.ndarray, paths: Sequence[str], source: str, fix: str) -> None:
    """One ReidxError naming the first images whose rows of ``vectors`` are not finite unit vectors."""
    rows = bad_rows(vectors)
    if len(rows):
        raise ReidxError(f"{source} {bad_embeddings(rows, paths)}", fix)


def bad_embeddings(rows: Sequence[int], paths: Sequence[str]) -> str:
    """``N embeddings that are not finite unit vectors (NaN, inf or zero), of a.png, b.png and 3 more``."""
    shown = ", ".join(str(paths[row]) for row in rows[:PATHS_SHOWN])
    more = f" and {len(rows) - PATHS_SHOWN} more" if len(rows) > PATHS_SHOWN else ""
    return f"{len(rows)} embeddings that are not finite unit vectors (NaN, inf or zero), of {shown}{more}"


def check_chunks(chunks: Sequence[Path], paths: Sequence[str]) -> None:
    """Refuse chunk files (covering ``paths`` in order) holding a row that is not a finite unit vector, naming
    its images; the chunks holding them are removed first, so the same command embeds those images again."""
    bad: list[int] = []
    damaged: list[Path] = []
    offset = 0
    for chunk in chunks:
        vectors = np.load(chunk, mmap_mode="r", allow_pickle=False)
        rows = bad_rows(vectors)
        if len(rows):
            bad += [offset + int(row) for row in rows]
            damaged.append(chunk)
        offset += len(vectors)
    if damaged:
        for chunk in damaged:
            chunk.unlink()
        raise ReidxError(
            f"{damaged[0].parent} holds {bad_embeddings(bad, paths)}; nothing was stored",
            f"run the same command again: it embeds the images of the {len(damaged)} removed chunk(s) again",
        )
