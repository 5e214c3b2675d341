"""The dense ranking kernel behind :func:`reidx.metrics.evaluate`: first-match rank and AP per query row, no
per-query loop. Performance work only; :mod:`reidx.metrics.reference` states the same rules readably.

How: query rows arrive in chunks (``evaluate`` bounds them to about 16M distances) and, within a chunk, are
processed in groups of rows shared among threads. Every row is cut into runs of 512 entries and each run is
sorted, values only (NumPy sorts short runs several times faster per entry than whole rows). The position of
a same-pid entry in its row's stable order is the number of entries below its distance (a binary search in
every run) plus, only where that distance is tied, the equal entries earlier in the gallery. A true match's
rank among the valid entries is its position minus the removed entries placed before it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

_CHUNK_ELEMENTS = 1 << 24  # bounds the lookup arrays of one block of rows
_GROUP_ROWS = 64  # query rows looked up together
_RUN = 512  # rows are sorted in runs of this length, which NumPy sorts several times faster per entry than rows
#: The per-query values both kernels return after the first-match rank, in order, by metric name.
PER_QUERY = ("mAP", "mINP")


@dataclass(frozen=True)
class Gallery:
    """Gallery labels, with indices grouped by pid so a query's own-identity entries are found directly."""

    pids: np.ndarray
    camids: np.ndarray
    by_pid: np.ndarray  # gallery indices sorted by pid (stable)

    @classmethod
    def build(cls, pids: np.ndarray, camids: np.ndarray) -> Gallery:
        return cls(pids, camids, np.argsort(pids, kind="stable"))

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gallery indices of each query's pid, padded to (queries, largest group), and the real ones."""
        sorted_pids = self.pids[self.by_pid]
        left = np.searchsorted(sorted_pids, q_pids, "left")
        counts = np.searchsorted(sorted_pids, q_pids, "right") - left
        slots = np.arange(counts.max(initial=0))
        real = slots < counts[:, None]
        return self.by_pid[np.where(real, left[:, None] + slots, 0)], real


@dataclass(frozen=True)
class Draws:
    """Seeded single-shot galleries: per draw, a random priority per gallery image, and per identity the
    image with the lowest priority."""

    priority: np.ndarray  # (draws, gallery)
    reps: np.ndarray  # (draws, identities): gallery index of each identity's image, identities sorted by pid
    rep_pids: np.ndarray  # (identities,)

    @classmethod
    def build(cls, pids: np.ndarray, draws: int, seed: int) -> Draws:
        priority = np.random.default_rng(seed).random((draws, len(pids)))
        reps = []
        for p in priority:
            order = np.lexsort((p, pids))
            group_start = np.r_[True, pids[order][1:] != pids[order][:-1]]
            reps.append(order[group_start])
        return cls(priority, np.stack(reps), np.unique(pids))


def multi_shot(
    dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: Gallery
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank of the first true match (-1: no valid match), AP and INP per query row, each shaped (1, rows).

    Every same-pid entry gets its position in the row's stable order; a true match's rank among the valid
    entries is that position minus the removed (same-pid, same-camid) entries placed before it. INP (Ye et
    al., TPAMI 2021) is the number of true matches over the rank (from 1) of the last one.
    """
    idx, real = gallery.same_pid(q_pids)
    match = real & (gallery.camids[idx] != q_camids[:, None])
    if not match.any():
        return np.full((1, len(dist)), -1), np.zeros((1, len(dist))), np.zeros((1, len(dist)))
    position = np.where(real, _stable_positions(dist, idx, real), dist.shape[1])
    order = np.argsort(position, axis=1)
    position, match, junk = (np.take_along_axis(a, order, axis=1) for a in (position, match, real & ~match))
    rank = position - (np.cumsum(junk, axis=1) - junk)
    hits = np.cumsum(match, axis=1)
    n = hits[:, -1]
    ap = np.where(match, hits / (rank + 1), 0.0).sum(1) / np.maximum(n, 1)
    first = np.where(n > 0, np.take_along_axis(rank, np.argmax(match, axis=1)[:, None], axis=1)[:, 0], -1)
    last = match.shape[1] - 1 - np.argmax(match[:, ::-1], axis=1)
    inp = np.where(n > 0, n / (np.take_along_axis(rank, last[:, None], axis=1)[:, 0] + 1), 0.0)
    return first[None], ap[None], inp[None]


def _stable_positions(dist: np.ndarray, idx: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of entry ``idx[i, j]`` in row i stably sorted by distance, where ``wanted`` (which must be the
    leading slots of each row). Rows are grouped by their number of wanted slots, so a group is padded
    only to its own widest row, and the groups are shared among torch's thread count of threads."""
    counts = wanted.sum(1)
    order = np.argsort(counts, kind="stable")
    positions = np.zeros(idx.shape, dtype=np.int64)

    def fill(rows: np.ndarray) -> None:
        width = counts[rows].max()
        positions[rows, :width] = _positions(dist[rows], idx[rows, :width], wanted[rows, :width])

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        list(pool.map(fill, np.array_split(order, -(-len(order) // _GROUP_ROWS))))
    return positions


def _positions(dist: np.ndarray, idx: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``_stable_positions`` for one block of rows."""
    values = np.take_along_axis(dist, idx, axis=1)
    runs = _sorted_runs(dist)
    below, tied = np.empty(values.shape, dtype=np.int64), np.empty(values.shape, dtype=bool)
    block = max(1, _CHUNK_ELEMENTS // (8 * runs.shape[0] * runs.shape[1]))  # bounds the lookup arrays
    for lo in range(0, values.shape[1], block):
        below[:, lo : lo + block], tied[:, lo : lo + block] = _count_below(runs, values[:, lo : lo + block])
    rows, slots = np.nonzero(wanted & tied)
    below[rows, slots] += _earlier_equal(dist, rows, idx[rows, slots], values[rows, slots])
    return below


def _sorted_runs(dist: np.ndarray) -> np.ndarray:
    """Each row cut into runs of ``_RUN`` entries (the last padded with +inf), each run sorted."""
    rows, width = dist.shape
    runs = np.empty((rows, -(-width // _RUN) * _RUN), dtype=dist.dtype)
    runs[:, :width], runs[:, width:] = dist, np.inf
    runs = runs.reshape(rows, -1, _RUN)
    runs.sort(axis=2)
    return runs


def _count_below(runs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value of row i: the entries of row i below it, and whether more than one entry equals it."""
    rows, count, length = runs.shape
    sought = np.repeat(values[:, None, :], count, axis=1)
    below = (
        torch.searchsorted(
            torch.from_numpy(runs.reshape(rows * count, length)), torch.from_numpy(sought.reshape(rows * count, -1))
        )
        .numpy()
        .reshape(sought.shape)
    )
    # a run's entries equal to a value start at ``below``: two runs hold it, or one holds it twice
    held = np.take_along_axis(runs, np.minimum(below, length - 1), axis=2) == sought
    twice = (np.take_along_axis(runs, np.minimum(below + 1, length - 1), axis=2) == sought) & (below + 1 < length)
    return below.sum(1), (held.sum(1) > 1) | twice.any(1)


def _earlier_equal(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each i, how many entries of row ``rows[i]`` left of column ``cols[i]`` equal ``values[i]``."""
    counts = np.empty(len(rows), dtype=np.int64)
    columns = np.arange(dist.shape[1])
    block = max(1, _CHUNK_ELEMENTS // dist.shape[1])
    for lo in range(0, len(rows), block):
        hi = lo + block
        equal = (dist[rows[lo:hi]] == values[lo:hi, None]) & (columns < cols[lo:hi, None])
        counts[lo:hi] = equal.sum(1)
    return counts


def single_shot(
    dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: Gallery, draws: Draws
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank of the true match (-1: no valid match), AP = 1 / (rank + 1) and INP, each shaped (draws, rows).
    With one true match per drawn gallery, INP = 1 / (rank + 1) = AP."""
    idx, real = gallery.same_pid(q_pids)
    match = real & (gallery.camids[idx] != q_camids[:, None])
    valid = match.any(1)
    first = np.full((len(draws.reps), len(dist)), -1)
    if not valid.any():
        return first, np.zeros(first.shape), np.zeros(first.shape)
    rows = np.arange(len(dist))
    other_identity = draws.rep_pids[None, :] != q_pids[:, None]
    for d, (priority, reps) in enumerate(zip(draws.priority, draws.reps, strict=True)):
        chosen = idx[rows, np.argmin(np.where(match, priority[idx], np.inf), axis=1)]
        value = dist[rows, chosen][:, None]
        rivals = dist[:, reps]
        before = (rivals < value) | ((rivals == value) & (reps[None, :] < chosen[:, None]))
        first[d] = (before & other_identity).sum(1)
    first[:, ~valid] = -1
    ap = np.where(first >= 0, 1.0 / (np.maximum(first, 0) + 1), 0.0)
    return first, ap, ap.copy()
