"""Online k-reciprocal re-ranking: the published algorithm on gallery ∪ {query}, one query at a time, exact.

The gallery's own part (k-NN lists, farthest similarities, R(., round(k1/2)), V on R*, the expanded V, its
inverted index and the reverse k-NN lists) is computed once (:meth:`GalleryRerank.build`). A query takes
item position 0 of gallery ∪ {query}, before the gallery (as the batch form puts queries first, so ties
go to it); it is held as id ``n`` internally. What it changes, found with one pass over its similarity row
(the plain search's cost) and a per-item threshold array:

- A: the items whose k-NN list it enters (its similarity >= their last kept neighbour's); their lists are
  patched (query inserted, last neighbour dropped);
- D1 / Dh: the items whose R(., k1) / R(., round(k1/2)) can change: A's members in that prefix and the
  neighbour each of them drops (reciprocity is lost only there);
- P: the items whose R* can change: D1, and every item with a member of Dh among its k1 + 1 nearest
  (read from the reverse lists); their R* and V are recomputed;
- M: the items whose farthest item becomes the query: their row normalisation changes, so their V is
  re-weighted (same support) where it is read.

The expanded V of a gallery row differs from the stored one only when its k2 nearest include the query or a
member of P or M; those rows are recomputed, the others read from the inverted index. Every gallery item
outside the query's support has Jaccard distance exactly 1, so the top-k is the support merged with the
plain top-k. Cost: the similarity row plus work proportional to the query's support.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from reidx.errors import ReidxError
from reidx.gallery.faiss.exact import block_candidates, float64_dots, longest_row, rescored, rounding_margin
from reidx.io import atomic_path
from reidx.retrieval.rerank.batch import Graph, build_graph, rerank
from reidx.retrieval.rerank.graph import (
    PUBLISHED,
    Passes,
    RerankParams,
    Rows,
    csr,
    expanded,
    expansion,
    final_distance,
    gather,
    inverted,
    jaccard_mins,
    knn_pass,
    reciprocal,
    summed,
    unit_rows,
    weights,
)

FORMAT = 1
_ARRAYS = ("nn", "sims", "far", "half", "v_ptr", "v_cols", "v_vals", "qe_ptr", "qe_cols", "qe_vals")


def fingerprint(vectors: np.ndarray, params: RerankParams) -> str:
    """SHA-256 of the vectors' bytes, shape and the parameters: what a stored gallery part was built from."""
    digest = hashlib.sha256(f"{FORMAT}|{vectors.shape}|{params.k1}|{params.k2}|{params.lam}".encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class GalleryRerank:
    """The gallery's own part of online re-ranking, and the exact online query."""

    params: RerankParams
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    graph: Graph
    index: Rows  # inverted index of graph.qe (per column: rows, values)
    reverse: Rows  # per item: the items whose k-NN list holds it (ascending) and its position there

    @classmethod
    def build(
        cls, vectors: np.ndarray, params: RerankParams = PUBLISHED, passes: Passes | None = None
    ) -> GalleryRerank:
        """The gallery part of ``vectors``; ``passes``: where the k-NN pass keeps its blocks (resumable)."""
        vectors = unit_rows("the gallery", vectors)
        knn = knn_pass(vectors, vectors, params.width(len(vectors)), passes)
        return cls._from_graph(params, vectors, build_graph(vectors, params, knn))

    @classmethod
    def _from_graph(cls, params: RerankParams, vectors: np.ndarray, graph: Graph) -> GalleryRerank:
        n, width = graph.nn.shape
        targets = graph.nn.ravel()
        order = np.argsort(targets, kind="stable")
        positions = np.tile(np.arange(width), n)[order]
        reverse = csr(np.bincount(targets, minlength=n), np.repeat(np.arange(n), width)[order], positions)
        return cls(params, vectors, graph, inverted(graph.qe, n), reverse)

    # -- storage -------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the gallery part as one ``.npz`` of plain arrays (no pickle), atomically."""
        g = self.graph
        arrays = dict(zip(_ARRAYS, (g.nn, g.sims, g.far, g.half, *g.v, *g.qe), strict=True))
        meta = np.array([FORMAT, self.params.k1, self.params.k2], np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(out, meta=meta, lam=np.array(self.params.lam), fingerprint=np.array(self.fingerprint), **arrays)

    @classmethod
    def load(cls, path: str | Path, vectors: np.ndarray) -> GalleryRerank:
        """Read a saved gallery part for ``vectors``; refused in one line when it was built from others."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            with np.load(path, allow_pickle=False) as stored:
                data = {key: stored[key] for key in stored.files}
        except (OSError, ValueError) as error:
            raise ReidxError(f"{path}: not a readable re-ranking file ({error})", "rebuild it") from None
        if "meta" not in data or int(data["meta"][0]) != FORMAT:
            raise ReidxError(f"{path}: not a re-ranking file of format {FORMAT}", "rebuild it")
        params = RerankParams(int(data["meta"][1]), int(data["meta"][2]), float(data["lam"]))
        if str(data["fingerprint"]) != fingerprint(vectors, params):
            raise ReidxError(f"{path} was built from other embeddings", "rebuild it for this gallery")
        a = [data[key] for key in _ARRAYS]
        graph = Graph(a[0], a[1], a[2], a[3], tuple(a[4:7]), tuple(a[7:10]))
        return cls._from_graph(params, vectors, graph)

    @cached_property
    def longest(self) -> float:
        """The largest vector norm (bounds the float32 rounding of a query's similarity row)."""
        return longest_row(self.vectors)

    @cached_property
    def last(self) -> np.ndarray:
        """Each item's similarity to the last neighbour its list keeps (a query entering the list beats it)."""
        return np.ascontiguousarray(self.graph.sims[:, -1])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.vectors, self.params)

    # -- growing -------------------------------------------------------------------------------------------

    def append(self, new_vectors: np.ndarray, passes: Passes | None = None) -> GalleryRerank:
        """The gallery part of the gallery followed by ``new_vectors``, exact. The k-NN search is incremental
        (old items are searched against the new ones only and their lists merged; ties keep the older id);
        the sparse stages, linear in the items, are recomputed from the merged lists. ``passes`` as in
        :meth:`build`."""
        new = unit_rows("the new gallery vectors", new_vectors, self.vectors.shape[1])
        both = np.concatenate([self.vectors, new])
        n, width = len(self.vectors), self.params.width(len(both))
        if len(new) == 0:
            return self
        if width != self.graph.nn.shape[1]:  # tiny gallery: the lists get longer, start again
            return GalleryRerank.build(both, self.params, passes)
        ids, sims, far = knn_pass(both, new, width, passes)
        found, found_sims, found_far = knn_pass(new, self.vectors, min(width, len(new)), passes)
        merged_ids = np.concatenate([self.graph.nn, found + n], 1)
        merged_sims = np.concatenate([self.graph.sims, found_sims], 1)
        order = np.lexsort((merged_ids, -merged_sims), axis=1)[:, :width]
        old_ids = np.take_along_axis(merged_ids, order, 1)
        old_sims = np.take_along_axis(merged_sims, order, 1)
        knn = (
            np.concatenate([old_ids, ids]),
            np.concatenate([old_sims, sims]),
            np.concatenate([np.minimum(self.graph.far, found_far), far]),
        )
        return GalleryRerank._from_graph(self.params, both, build_graph(both, self.params, knn))

    # -- querying ------------------------------------------------------------------------------------------

    def query(self, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` gallery items nearest ``query`` after re-ranking on gallery ∪ {query}: ``(ids,
        distances)``, ranked by final distance, ties by gallery order."""
        q = unit_rows("the query", np.reshape(query, (1, -1)), self.vectors.shape[1])[0]
        n, p = len(self.vectors), self.params
        k = min(k, n)
        if n <= max(p.k1 + 1, p.k2):  # every list holds every item: the batch form on n + 1 items
            final = rerank(q[None], self.vectors, p).rows(0, 1)[0]
            top = np.argsort(final, kind="stable")[:k]
            return top, final[top]
        return _Query(self, q).top(k)


class _Query:
    """One online query against a gallery part: the patched graph of gallery ∪ {query} (query = id n)."""

    def __init__(self, gallery: GalleryRerank, q: np.ndarray) -> None:
        self.g, self.q, self.params = gallery, q, gallery.params
        p = gallery.params
        g, graph = gallery, gallery.graph
        self.n = n = len(g.vectors)
        width = graph.nn.shape[1]
        row = g.vectors @ q  # the plain search's similarity row (float32)
        self.margin = float(rounding_margin(q.size, np.array([np.linalg.norm(q) * g.longest]))[0])
        self.row = row
        self.self_sim = float(float64_dots(q[None], np.zeros(1, np.int64), q[None], np.zeros(1, np.int64))[0])
        # the query's own list: its `width` nearest gallery items and itself (first among equals)
        near_ids, near_sims = self.plain(width)
        cand_ids = np.r_[n, near_ids]
        cand_sims = np.r_[self.self_sim, near_sims]
        order = np.lexsort((np.r_[-1, np.arange(width)], -cand_sims))[:width]
        self.q_list = cand_ids[order]
        # M: items whose farthest item becomes the query; the query's own farthest
        low = np.flatnonzero(row <= graph.far + self.margin)
        low_sims = self.sims_to_query(low)
        self.m_ids = low[low_sims < graph.far[low]]
        self.m_far = low_sims[low_sims < graph.far[low]]
        lowest = np.flatnonzero(row <= row.min() + self.margin)  # float32 picks, float64 decides
        self.q_far = min(self.self_sim, float(self.sims_to_query(lowest).min()))
        # A: items whose list the query enters (ties go to the query), and their patched lists
        last = g.last
        cand = np.flatnonzero(row >= last - self.margin)
        cand_sims = self.sims_to_query(cand)
        entered = cand_sims >= last[cand]
        self.a_ids, a_sims = cand[entered], cand_sims[entered]
        old = graph.nn[self.a_ids]
        self.a_pos = (graph.sims[self.a_ids] > a_sims[:, None]).sum(1)
        slots = np.arange(width)
        source = np.where(slots < self.a_pos[:, None], slots, slots - 1)
        patched = np.take_along_axis(old, np.maximum(source, 0), 1)
        patched[slots == self.a_pos[:, None]] = n
        self.patched_ids = np.r_[self.a_ids, n]  # ascending: a_ids is, and n is the largest
        self.patched_rows = np.concatenate([patched, self.q_list[None]])

        def changed_prefix(k: int) -> np.ndarray:
            inside = self.a_pos < k
            return np.union1d(self.a_ids[inside], old[inside, k - 1])

        d1, dh = changed_prefix(p.k1 + 1), changed_prefix(p.half + 1)
        self.half_ids = np.r_[dh, n]
        self.half_rows = reciprocal(self.half_ids, self.lookup, p.half + 1)
        # P: R*(a) changes only if R(a, k1) does (a in D1) or R(a, k1) holds a member c of Dh; for a outside
        # D1 that R is the stored one, and c in R(a) <=> a in R(c): the stored R of Dh's members
        held = reciprocal(dh, lambda ids: graph.nn[ids], p.k1 + 1)
        self.p_ids = np.union1d(d1, held[held >= 0])
        fresh = np.r_[self.p_ids, n]
        counts, members = expanded(fresh, self.lookup, self.half_of, p)
        vals = weights(fresh, counts, members, self.far_of(fresh), self.pair_sims)
        self.fresh_ids, self.fresh = fresh, csr(counts, members, vals)
        # which of P really changed: in support (new rows may then share support with the query) or values
        old_counts, old_cols, old_vals = gather(graph.v, self.p_ids)
        new_counts = counts[:-1]
        same = old_counts == new_counts
        entry_old, entry_new = np.repeat(same, old_counts), np.repeat(same, new_counts)
        differ_cols = old_cols[entry_old] != members[: len(entry_new)][entry_new]
        differ_vals = old_vals[entry_old] != vals[: len(entry_new)][entry_new]
        owner = np.repeat(np.flatnonzero(same), old_counts[same])
        support = ~same
        support[np.unique(owner[differ_cols])] = True
        values = support.copy()
        values[np.unique(owner[differ_vals])] = True
        self.support_changed, self.values_changed = self.p_ids[support], self.p_ids[values]

    # -- the patched graph ---------------------------------------------------------------------------------

    def plain(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The plain top-k gallery items of the query and their float64 similarities."""
        margin = np.array([self.margin])
        _, ids = rescored(self.g.vectors, self.q[None], *block_candidates(self.row[None], k, margin, 0), k, margin)
        return ids[0], self.sims_to_query(ids[0])

    def sims_to_query(self, ids: np.ndarray) -> np.ndarray:
        return float64_dots(self.g.vectors, ids, self.q[None], np.zeros(len(ids), np.int64))

    def pair_sims(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """float64 similarities of pairs of item ids (id n is the query), summed as ``float64_dots`` does."""
        out = np.empty(len(a))
        qa, qb = a == self.n, b == self.n
        plain = ~(qa | qb)
        out[plain] = float64_dots(self.g.vectors, a[plain], self.g.vectors, b[plain])
        one = qa ^ qb
        out[one] = self.sims_to_query(np.where(qa, b, a)[one])
        out[qa & qb] = self.self_sim
        return out

    def _override(self, ids: np.ndarray, table: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = table[np.minimum(ids, self.n - 1)]
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        hit = keys[pos] == ids
        out[hit] = rows[pos[hit]]
        return out

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        return self._override(ids, self.g.graph.nn, self.patched_ids, self.patched_rows)

    def half_of(self, ids: np.ndarray) -> np.ndarray:
        return self._override(ids, self.g.graph.half, self.half_ids, self.half_rows)

    def far_of(self, ids: np.ndarray) -> np.ndarray:
        far = np.where(ids == self.n, self.q_far, self.g.graph.far[np.minimum(ids, self.n - 1)])
        pos = np.minimum(np.searchsorted(self.m_ids, ids), max(len(self.m_ids) - 1, 0))
        hit = (self.m_ids[pos] == ids) if len(self.m_ids) else np.zeros(len(ids), bool)
        far[hit] = self.m_far[pos[hit]]
        return far

    def reverse_of(self, ids: np.ndarray, k: int) -> np.ndarray:
        """The gallery items holding one of ``ids`` (gallery ids) among their k nearest."""
        _, holders, positions = gather(self.g.reverse, ids)
        return np.unique(holders[positions < k])

    def v_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """V of gallery ∪ {query} for ``ids``: recomputed for P and the query, re-weighted for M, else stored."""
        unique, back = np.unique(ids, return_inverse=True)
        is_fresh = np.isin(unique, self.fresh_ids)
        is_m = np.isin(unique, self.m_ids) & ~is_fresh
        counts = np.empty(len(unique), np.int64)
        c, cols, vals = gather(self.fresh, np.searchsorted(self.fresh_ids, unique[is_fresh]))
        stored = unique[~is_fresh]
        c2, cols2, vals2 = gather(self.g.graph.v, stored)
        m_here = is_m[~is_fresh]
        if m_here.any():  # same support, new normalisation
            entry_m = np.repeat(m_here, c2)
            vals2 = vals2.copy()
            vals2[entry_m] = weights(
                stored[m_here], c2[m_here], cols2[entry_m], self.far_of(stored[m_here]), self.pair_sims
            )
        counts[is_fresh], counts[~is_fresh] = c, c2
        order = np.argsort(np.r_[np.flatnonzero(is_fresh), np.flatnonzero(~is_fresh)], kind="stable")
        table_cols = _reordered(np.r_[c, c2], np.r_[cols, cols2], order)
        table_vals = _reordered(np.r_[c, c2], np.r_[vals, vals2], order)
        return gather(csr(counts, table_cols, table_vals), back)

    # -- the answer ----------------------------------------------------------------------------------------

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        p, graph, n = self.params, self.g.graph, self.n
        q_counts, q_cols, q_vals = expansion(np.array([n]), self.lookup, self.v_rows, p.k2)
        # rows whose expanded V may differ from the stored one
        touched = np.union1d(self.values_changed, self.m_ids)
        a_k2 = self.a_ids[self.a_pos < p.k2]
        support_changed = np.union1d(a_k2, self.reverse_of(self.support_changed, p.k2))
        old_cols = q_cols[q_cols < n]
        _, old_rows, _ = gather(self.g.index, old_cols)
        candidates = np.union1d(np.unique(old_rows), support_changed)
        changed = np.isin(candidates, a_k2) | np.isin(graph.nn[candidates, : p.k2], touched).any(1)
        redo = candidates[changed]
        # stored rows: min-sums through the inverted index, dropping the rows recomputed below
        _, rows, sums = jaccard_mins(q_counts, q_cols, q_vals, self._old_index_only())
        keep = ~np.isin(rows, redo)
        rows, sums = rows[keep], sums[keep]
        # recomputed rows: their expanded V against the query's
        r_counts, r_cols, r_vals = expansion(redo, self.lookup, self.v_rows, p.k2)
        owner = np.repeat(redo, r_counts)
        at = np.minimum(np.searchsorted(q_cols, r_cols), max(len(q_cols) - 1, 0))
        shared = q_cols[at] == r_cols if len(q_cols) else np.zeros(len(r_cols), bool)
        re_rows, _, re_sums = summed(
            owner[shared], np.zeros(shared.sum(), np.int64), np.minimum(q_vals[at[shared]], r_vals[shared])
        )
        support = np.r_[rows, re_rows]
        mins_support = np.r_[sums, re_sums]
        plain_ids, _ = self.plain(min(n, k + 8))  # + 8: ties at the k-th
        ids = np.union1d(support, plain_ids)
        at = np.searchsorted(ids, support)
        final = final_distance(self.sims_to_query(ids), self.q_far, p.lam, at, mins_support)
        order = np.lexsort((ids, final))[:k]
        return ids[order], final[order]

    def _old_index_only(self) -> Rows:
        """The stored inverted index with an empty list for the query's column (id n)."""
        ptr, rows, vals = self.g.index
        return np.r_[ptr, ptr[-1]], rows, vals


def _reordered(counts: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """CSR values whose rows are taken in ``order``."""
    return gather(csr(counts, values, values), order)[1]
