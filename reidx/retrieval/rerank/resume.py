"""The k-NN pass of a gallery's re-ranking graph, resumable: each block of queries it finishes is kept in the
``reidx embed`` job's state folder (``.partial``), so that an interrupted ``embed --rerank-graph`` run,
started again, searches only the blocks it had not finished (the pass is the N² part of the build; the
sparse stages after it are linear and simply run again).

A block file is named after its pass (SHA-256 of the gallery and query vectors and k) and its first query,
and carries the SHA-256 of its bytes in its name: one whose bytes or arrays do not match is discarded and
searched again, never trusted. The state folder goes with the rest of ``.partial`` once the index is written.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reidx.io import sha256_file, write_checksummed
from reidx.retrieval.rerank.graph import Knn

FORMAT = 1
_NAME = re.compile(r"^knn-(?P<pass>[0-9a-f]{16})-(?P<first>\d{10})-(?P<sha256>[0-9a-f]{64})\.npz$")


class KnnBlocks:
    """The kept blocks of one k-NN pass (``gallery`` searched for ``queries``' ``k`` nearest) in ``directory``;
    ``advance(n)`` is told of every block found, kept or searched (progress)."""

    def __init__(
        self,
        directory: Path,
        gallery: np.ndarray,
        queries: np.ndarray,
        k: int,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        digest = hashlib.sha256(f"{FORMAT}|{gallery.shape}|{queries.shape}|{k}".encode())
        digest.update(np.ascontiguousarray(gallery).data)
        digest.update(np.ascontiguousarray(queries).data)
        self.directory, self.pass_id, self.k = directory, digest.hexdigest()[:16], k
        self.advance = advance or (lambda n: None)

    def load(self, first: int, count: int) -> Knn | None:
        for path in sorted(self.directory.glob(f"knn-{self.pass_id}-{first:010d}-*.npz")):
            found = self._read(path, count)
            if found is not None:
                self.advance(count)
                return found
            path.unlink(missing_ok=True)  # damaged or not of this block: searched again
        return None

    def save(self, first: int, found: Knn) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, ids=found[0], sims=found[1], far=found[2])
        write_checksummed(self.directory, f"knn-{self.pass_id}-{first:010d}", ".npz", buffer.getvalue())
        self.advance(len(found[2]))

    def _read(self, path: Path, count: int) -> Knn | None:
        """The block in ``path`` if its bytes match its checksum and it holds ``count`` rows of k, else None."""
        try:
            if sha256_file(path) != _NAME.match(path.name)["sha256"]:
                return None
            with np.load(path, allow_pickle=False) as stored:
                ids, sims, far = stored["ids"], stored["sims"], stored["far"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if ids.shape != (count, self.k) or sims.shape != ids.shape or far.shape != (count,):
            return None
        if ids.dtype != np.int64 or sims.dtype != np.float64 or far.dtype != np.float64:
            return None
        return ids, sims, far
