"""Sharded embedding under ``torchrun``: every rank embeds a contiguous share of the image list on its own
device (``reidx.distributed.setup``: cuda:LOCAL_RANK, else CPU with gloo) into its own resumable state
folder ``.partial/shard-R-of-W`` (:func:`reidx.retrieval.jobs.embed_to_chunks`), and rank 0, the only
writer, stores every rank's chunks in rank order: the same vectors, ids and metadata order as one process.

Rank 0 decides what to embed (the output checks, ``--append``'s known paths) and sends the list; a refusal
there sends None and the other ranks stop quietly. A failure on any rank while embedding is raised on rank 0
(:func:`reidx.distributed.together`; the other ranks stop quietly), after the ranks that succeeded have
kept their chunks, so the next run resumes each shard where it stopped.
The index folder must be on a file system every rank sees (one machine, or a shared mount).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from reidx.distributed import DistEnv, together
from reidx.evaluation.embedders import Embedder
from reidx.retrieval.jobs import embed_to_chunks
from reidx.retrieval.requests import EmbedJob


def shard_span(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, end)``: the contiguous share of ``count`` items that rank ``rank`` of ``world_size`` embeds."""
    return count * rank // world_size, count * (rank + 1) // world_size


def shard_dir(state_dir: Path, env: DistEnv) -> Path:
    """The resume-state folder of this rank's shard."""
    return state_dir / f"shard-{env.rank:03d}-of-{env.world_size:03d}"


def share_paths(env: DistEnv, paths: Sequence[str] | None = None) -> list[str] | None:
    """Rank 0's image list (None: it refused, stop), received by every rank."""
    box = [list(paths) if paths is not None else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def embed_shards(env: DistEnv, embedder: Embedder, paths: Sequence[str], state_dir: Path, job: EmbedJob):
    """Embed this rank's share of ``paths`` as ``job`` says (:func:`embed_to_chunks`); rank 0 gets every rank's
    chunk files in order, the others None. A rank that failed reports why; rank 0 raises it.
    """
    start, end = shard_span(len(paths), env.rank, env.world_size)

    def embed_share() -> list[str]:
        if end == start:
            return []
        chunks = embed_to_chunks(embedder, paths[start:end], shard_dir(state_dir, env), job, show=env.is_main)
        return [str(chunk) for chunk in chunks]

    own = together(env, embed_share, "fix it and run the same command again (it resumes)")
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, own)
    if not env.is_main:
        return None
    return [Path(chunk) for chunks in gathered for chunk in chunks]
