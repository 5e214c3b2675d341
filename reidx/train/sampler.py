"""P×K identity batches: deterministic from (seed, stream, epoch), sharded across DDP ranks.

Each batch holds P distinct identities × K images each. Identities are visited in shuffled cycles and
each identity's images in shuffled cycles (an identity with fewer than K images repeats some), so every
image is seen about equally often. Every sample carries its own augmentation seed, so the data pipeline
is deterministic whatever the number of loader workers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from reidx.errors import ReidxError

#: A sample key: (dataset index, augmentation seed).
Key = tuple[int, int]


class IdentityBatchSampler:
    """Batch sampler of P×K keys; ``steps`` batches per epoch on each rank."""

    def __init__(
        self,
        labels: Sequence[int],
        ids_per_batch: int,
        instances: int,
        steps: int,
        seed: int,
        stream: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        groups: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(int(label), []).append(index)
        self.by_id = {pid: np.asarray(indices) for pid, indices in sorted(groups.items())}
        if len(self.by_id) < ids_per_batch:
            raise ReidxError(
                f"only {len(self.by_id)} training identities for --batch-ids {ids_per_batch}",
                f"use --batch-ids {len(self.by_id)} or fewer",
            )
        self.ids_per_batch, self.instances, self.steps = ids_per_batch, instances, steps
        self.seed, self.stream, self.rank, self.world_size = seed, stream, rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.seed, "stream": self.stream}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed, self.stream = int(state["epoch"]), int(state["seed"]), int(state["stream"])

    def __iter__(self) -> Iterator[list[Key]]:
        batches = self.epoch_batches(self.epoch)
        return iter(batches[self.rank :: self.world_size])

    def epoch_batches(self, epoch: int) -> list[list[Key]]:
        """All ranks' batches of ``epoch`` (rank r takes every world_size-th, from r)."""
        rng = np.random.default_rng([self.seed, self.stream, epoch])
        id_queue: deque[int] = deque()
        pools = {pid: deque() for pid in self.by_id}
        batches = []
        for _ in range(self.steps * self.world_size):
            chosen = self._next_ids(rng, id_queue)
            batch = []
            for pid in chosen:
                pool = pools[pid]
                while len(pool) < self.instances:
                    pool.extend(rng.permutation(self.by_id[pid]).tolist())
                batch += [pool.popleft() for _ in range(self.instances)]
            seeds = rng.integers(0, 2**62, size=len(batch)).tolist()
            batches.append(list(zip(batch, seeds, strict=True)))
        return batches

    def _next_ids(self, rng: np.random.Generator, queue: deque[int]) -> list[int]:
        """P distinct identities from the shuffled identity cycle, refilled when it runs out."""
        chosen: list[int] = []
        while len(chosen) < self.ids_per_batch:
            if not queue:
                fresh = rng.permutation(list(self.by_id)).tolist()
                queue.extend([pid for pid in fresh if pid not in chosen] + [pid for pid in fresh if pid in chosen])
            chosen.append(queue.popleft())
        return chosen
