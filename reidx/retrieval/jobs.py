"""Resumable embedding jobs for ``reidx embed``: the vectors of :func:`reidx.evaluation.iter_embeddings`,
persisted in chunks under a state folder so that an interrupted run, started again with the same model,
mode and image list, continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reidx.checkpoint import LoadedModel
from reidx.console import err_console
from reidx.evaluation.embed import iter_embeddings, progress_counter
from reidx.evaluation.embedders import Embedder, as_embedder
from reidx.io import atomic_path, writing

JOB_NAME = "job.json"
CHUNK_GLOB = "chunk-*.npy"
#: At most this many seconds of embedding work are lost when a run is killed.
FLUSH_SECONDS = 10.0


def embedding_fingerprint(model: LoadedModel | Embedder, mode: str | None = None) -> dict[str, object]:
    """What makes two embeddings comparable: the checkpoint's bytes, the mode and the input size (the same for a
    checkpoint and its ``reidx export`` file of that mode)."""
    return as_embedder(model, mode).fingerprint()


def embed_to_chunks(
    embedder: Embedder,
    paths: Sequence[str],
    state_dir: Path,
    *,
    batch_size: int = 64,
    workers: int = 2,
    chunk_size: int = 4096,
    flush_seconds: float = FLUSH_SECONDS,
    on_chunk: Callable[[int], None] | None = None,
    show: bool = True,
) -> list[Path]:
    """Embed ``paths`` into ``chunk-START-END.npy`` files under ``state_dir``, in order, resuming the
    chunks a previous run of the same job left there; returns the chunk files covering every path.

    A chunk is written every ``chunk_size`` images or ``flush_seconds``, whichever comes first, always at
    a batch boundary (so a resumed run batches the rest exactly as an uninterrupted one would).
    ``on_chunk(done)`` is called after each chunk is safely on disk; ``show``: the progress bar.
    """
    chunks = resume_chunks(state_dir, job_key(embedder, paths), len(paths))
    done = chunk_range(chunks[-1])[1] if chunks else 0
    pending: list[np.ndarray] = []
    start, flushed = done, time.monotonic()
    with progress_counter(len(paths), done, "embedding", show=show) as advance:
        vectors_of = iter_embeddings(embedder, paths[done:], batch_size=batch_size, workers=workers)
        for vectors in vectors_of:
            pending.append(vectors)
            done += len(vectors)
            advance(len(vectors))
            if done - start >= chunk_size or done == len(paths) or time.monotonic() - flushed >= flush_seconds:
                chunks.append(write_chunk(state_dir, start, np.concatenate(pending)))
                pending, start, flushed = [], done, time.monotonic()
                if on_chunk is not None:
                    on_chunk(done)
    return chunks


def job_key(embedder: Embedder, paths: Sequence[str]) -> str:
    """A hash naming one embedding job: model fingerprint, mode, input size and the exact path list."""
    job = {"fingerprint": embedder.fingerprint(), "paths": list(map(str, paths))}
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def resume_chunks(state_dir: Path, key: str, total: int) -> list[Path]:
    """The contiguous, readable chunks from 0 left by the same job; everything else is discarded (another
    job's state entirely; a damaged chunk, with a note, and what follows it)."""
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
    chunks, end, dim = [], 0, None
    for chunk in sorted(state_dir.glob(CHUNK_GLOB)):
        span = chunk_range(chunk)
        if span is not None and span[0] == end:
            rows = read_chunk_shape(chunk)
            if rows is not None and rows[0] == span[1] - span[0] and dim in (None, rows[1]):
                chunks.append(chunk)
                end, dim = span[1], rows[1]
                continue
            err_console.print(
                f"note: discarded the damaged embedding chunk {chunk}; re-embedding from image {end}",
                highlight=False,
                soft_wrap=True,
            )
        chunk.unlink()
    return chunks


def read_chunk_shape(chunk: Path) -> tuple[int, int] | None:
    """``(rows, dim)`` of a readable float32 chunk file, None for a damaged one."""
    try:
        vectors = np.load(chunk, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.dtype != np.float32:
        return None
    return int(vectors.shape[0]), int(vectors.shape[1])


def chunk_range(chunk: Path) -> tuple[int, int] | None:
    """``(start, end)`` path indices covered by a chunk file, None for a name reidx did not write."""
    parts = chunk.stem.split("-")
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def write_chunk(state_dir: Path, start: int, vectors: np.ndarray) -> Path:
    """Save one chunk atomically (a crash never leaves a truncated chunk)."""
    path = state_dir / f"chunk-{start:010d}-{start + len(vectors):010d}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)
    return path
