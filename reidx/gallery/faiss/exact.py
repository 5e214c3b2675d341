"""Exact inner-product top-k over gallery blocks, tie-exact and independent of the BLAS.

The ranking rule of every reidx search: score descending, tied scores by gallery id ascending. float32
matrix products round differently with the BLAS and the block shape, so they only pick candidates: each
block's float32 scores (numpy's BLAS, the fastest here) give, by ``torch.topk``, every entry within the
float32 rounding bound of the k-th score, and those few are re-scored in float64, which decides the order.
Equal vectors get equal scores, so ties fall to the gallery id.
"""

from __future__ import annotations

import numpy as np

from reidx.gallery.ranking import ranked

#: Floats in one block of the score matrix (queries x gallery entries): 32 Mi floats = 128 MB.
BLOCK_FLOATS = 32 * 1024 * 1024
#: Hits fetched per block beyond k, so that a re-scan of the block row is rarely needed.
EXTRA = 8
#: Blocks up to this many gallery entries wide are selected from by numpy (faster there than torch.topk
#: after numpy's BLAS, whose threads still spin); wider ones by torch.topk.
NUMPY_SELECT_WIDTH = 4096
#: float32 unit roundoff.
UNIT_ROUNDOFF = 2.0**-24
#: Queries scored together (the gallery block width follows from BLOCK_FLOATS).
QUERY_BLOCK = 2048


def exact_top_k(
    gallery: np.ndarray, queries: np.ndarray, k: int, gallery_norm: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)``, each (Q, k): the k best gallery rows per query by inner product (computed in
    float64), ties by id (``gallery`` float32 C-contiguous, k <= its rows, no row longer than
    ``gallery_norm``)."""
    total, dim, parts = len(gallery), gallery.shape[1], []
    for first in range(0, len(queries), QUERY_BLOCK):
        block_queries = queries[first : first + QUERY_BLOCK]
        margin = rounding_margin(dim, np.linalg.norm(block_queries, axis=1) * gallery_norm)
        width = max(k, BLOCK_FLOATS // len(block_queries))
        found = [
            block_candidates(block_queries @ gallery[start : start + width].T, k, margin, start)
            for start in range(0, total, width)
        ]
        candidates = np.concatenate([s for s, _ in found], 1), np.concatenate([i for _, i in found], 1)
        parts.append(rescored(gallery, block_queries, *candidates, k, margin))
    if not parts:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])


def longest_row(vectors: np.ndarray, block: int = 65536) -> float:
    """The largest L2 norm among the rows (read in blocks: no full-size temporary)."""
    return float(
        max(np.linalg.norm(vectors[start : start + block], axis=1).max() for start in range(0, len(vectors), block))
    )


def rounding_margin(dim: int, norms: np.ndarray) -> np.ndarray:
    """Twice the bound on a float32 dot product's rounding error, per query (gamma_dim * |q| * |g|)."""
    gamma = dim * UNIT_ROUNDOFF / (1 - dim * UNIT_ROUNDOFF)
    return 2 * gamma * norms.astype(np.float64)


def block_candidates(scores: np.ndarray, k: int, margin: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of one float32 score block: every entry within ``margin`` of the row's k-th score (more
    columns padded with -inf / id -1), ids offset to the gallery."""
    width = scores.shape[1]
    fetch = min(k + EXTRA, width)
    if width <= NUMPY_SELECT_WIDTH:  # numpy alone: no second thread pool waking up after the BLAS one
        indices = np.argpartition(scores, width - fetch, axis=1)[:, width - fetch :]
        values = np.take_along_axis(scores, indices, 1)
        order = np.argsort(-values, axis=1)
        values, indices = np.take_along_axis(values, order, 1), np.take_along_axis(indices, order, 1)
    else:
        import torch  # here: a narrow block (a small gallery) is selected from without torch

        values, indices = (tensor.numpy() for tensor in torch.topk(torch.from_numpy(scores), fetch, dim=1))
    floor = values[:, min(k, width) - 1] - margin
    rescan = np.flatnonzero(values[:, -1] >= floor) if fetch < width else []
    if not len(rescan):
        return values, indices + offset
    wide = [np.flatnonzero(scores[row] >= floor[row]) for row in rescan]
    out_scores = np.full((len(scores), max(fetch, *map(len, wide))), -np.inf, np.float32)
    out_ids = np.full(out_scores.shape, -1 - offset, np.int64)
    out_scores[:, :fetch], out_ids[:, :fetch] = values, indices
    for row, columns in zip(rescan, wide, strict=True):
        out_scores[row], out_ids[row] = -np.inf, -1 - offset
        out_scores[row, : len(columns)], out_ids[row, : len(columns)] = scores[row, columns], columns
    return out_scores, out_ids + offset


def rescored(
    gallery: np.ndarray, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int, margin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates per row, ranked (score descending, id ascending). The candidates within
    ``margin`` of the k-th float32 score are ranked by float32; each one within ``margin`` of a neighbour in
    that order (a float32 near-tie, or an exact tie) is re-scored in float64, and those rows are re-ranked
    (the others' float32 order is beyond rounding doubt)."""
    if not (scores[:, :-1] >= scores[:, 1:]).all():  # one block's candidates come sorted already
        scores, ids = ranked(scores, ids)
    keep = (scores >= (scores[:, k - 1] - margin)[:, None]) & (ids >= 0)
    scores, ids = np.where(keep, scores, -np.inf).astype(np.float64), np.where(keep, ids, -1)
    near = np.zeros(scores.shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # -inf - -inf past the candidates
        close = (scores[:, :-1] - scores[:, 1:] <= margin[:, None]) & (ids[:, 1:] >= 0)
    near[:, :-1] |= close
    near[:, 1:] |= close
    rows, cols = np.nonzero(near)
    if len(rows):
        scores[rows, cols] = float64_dots(gallery, ids[rows, cols], queries, rows)
        doubt = np.unique(rows)
        scores[doubt], ids[doubt] = ranked(scores[doubt], ids[doubt])
    return scores[:, :k].astype(np.float32), ids[:, :k]


def float64_dots(gallery: np.ndarray, ids: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``gallery[ids[i]] . queries[rows[i]]`` in float64, each pair summed the same way (equal vectors, equal
    scores), in small cache-sized pieces."""
    out = np.empty(len(ids))
    for start in range(0, len(ids), 256):
        pairs = gallery[ids[start : start + 256]].astype(np.float64)
        pairs *= queries[rows[start : start + 256]]
        out[start : start + 256] = pairs.sum(1)
    return out
