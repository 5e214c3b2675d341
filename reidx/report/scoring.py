"""How a report scores query-gallery pairs: the plain inner product, k-reciprocal re-ranking (the batch form,
queries and gallery in one neighbourhood graph, as the published evaluation does) or average query expansion;
and the ranking metrics and open-set operating points of such scores.

Every scoring feeds the same metric code (:mod:`reidx.metrics.rank`): re-ranked distances a block of query
rows at a time (``Reranked.blocks()``, never a (queries x gallery) or (items x items) array), expanded queries
through the same inner product as plain ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from reidx.errors import ReidxError
from reidx.metrics import RankingMetrics, evaluate_blocks, evaluate_embeddings
from reidx.metrics.open_set import DISTANCE, SIMILARITY, OpenSetResult, best_impostors, open_set_blocks
from reidx.retrieval.expansion import average_query_expansion, left_out_expansion
from reidx.retrieval.rerank import RerankParams, rerank
from reidx.retrieval.rerank.left_out import left_out_distances

PLAIN_LABEL = "plain"
#: Query rows of plain similarities handed to the open-set code at once (about 16M scores a block).
_SCORES_PER_BLOCK = 1 << 24


@dataclass(frozen=True)
class Scoring:
    """One way of scoring: plain (neither set), re-ranked with ``rerank``'s parameters, or AQE with
    ``expansion`` neighbours."""

    rerank: RerankParams | None = None
    expansion: int = 0

    @property
    def label(self) -> str:
        """As tables name it: "plain", "re-ranked k1 20 / k2 6 / λ 0.3", "AQE 3"."""
        if self.rerank is not None:
            p = self.rerank
            return f"re-ranked k1 {p.k1} / k2 {p.k2} / λ {p.lam:g}"
        return f"AQE {self.expansion}" if self.expansion else PLAIN_LABEL

    @property
    def key(self) -> str:
        """Its part of a cache entry's name ("" for plain): every parameter, exactly."""
        if self.rerank is not None:
            p = self.rerank
            return f"rerank-k1={p.k1}-k2={p.k2}-lambda={p.lam!r}"
        return f"aqe-{self.expansion}" if self.expansion else ""

    @property
    def plain(self) -> bool:
        return self.rerank is None and not self.expansion

    def row_mode(self, mode: str) -> str:
        """A row's mode cell: the embedding mode, with the scoring unless plain ("fused, AQE 3")."""
        return mode if self.plain else f"{mode}, {self.label}"


PLAIN = Scoring()


def rerank_params(k1: int, k2: int, lam: float) -> RerankParams:
    """``--k1 --k2 --lambda`` checked: a value out of range is one line naming its flag."""
    if k1 < 1:
        raise ReidxError(f"--k1 {k1} is out of range", "give k1 >= 1 (published: 20)")
    if k2 < 1:
        raise ReidxError(f"--k2 {k2} is out of range", "give k2 >= 1 (published: 6)")
    if not 0.0 <= lam <= 1.0:
        raise ReidxError(f"--lambda {lam:g} is out of range", "give 0 <= lambda <= 1 (published: 0.3)")
    return RerankParams(k1, k2, lam)


def scorings(rerank_with: RerankParams | None = None, expansion: int | None = None) -> list[Scoring]:
    """The scorings of a report: plain first, then AQE K (``--query-expansion K``, K >= 0; 0 adds nothing),
    then re-ranking."""
    if expansion is not None and expansion < 0:
        raise ReidxError(f"--query-expansion {expansion} is out of range", "give K >= 0 (0: off), e.g. 3")
    found = [PLAIN]
    if expansion:
        found.append(Scoring(expansion=expansion))
    if rerank_with is not None:
        found.append(Scoring(rerank=rerank_with))
    return found


def ranking_metrics(
    scoring: Scoring,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    **options: Any,
) -> RankingMetrics:
    """CMC, mAP and mINP of ``scoring`` on L2-normalised embeddings (``options``: ``evaluate``'s protocol,
    max_rank, seed, draws)."""
    labels = (q_pids, g_pids, q_camids, g_camids)
    if scoring.rerank is not None:
        reranked = rerank(q_feats, g_feats, scoring.rerank)
        return evaluate_blocks(reranked.blocks(), (len(q_feats), len(g_feats)), *labels, **options)
    if scoring.expansion:
        q_feats = average_query_expansion(q_feats, g_feats, scoring.expansion)
    return evaluate_embeddings(q_feats, g_feats, *labels, **options)


def open_set_points(
    scoring: Scoring,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    labels: tuple[Any, Any, Any, Any],
    progress: Callable[[int, int], None] | None = None,
) -> OpenSetResult:
    """The open-set operating points (:mod:`reidx.metrics.open_set`) of ``scoring``'s scores: plain inner
    products (what ``search --min-score`` compares), re-ranked distances or expanded queries' inner products.
    Impostor trials score each query against the gallery without its identity: for re-ranking and AQE, which
    read the whole gallery, that is re-ranked (once per query identity: ``progress(done, total)``) or expanded
    again without it. ``labels``: q_pids, g_pids, q_camids, g_camids."""
    q_pids, g_pids = labels[:2]
    shape = (len(q_feats), len(g_feats))
    if scoring.rerank is not None:
        blocks = rerank(q_feats, g_feats, scoring.rerank).blocks()
        impostors = left_out_distances(q_feats, g_feats, q_pids, g_pids, scoring.rerank, progress)
        return open_set_blocks(blocks, shape, *labels, kind=DISTANCE, impostors=impostors)
    impostors = None
    if scoring.expansion:
        alone = left_out_expansion(q_feats, g_feats, q_pids, g_pids, scoring.expansion)
        impostors = best_impostors(_similarities(alone, g_feats), shape, q_pids, g_pids, kind=SIMILARITY)
        q_feats = average_query_expansion(q_feats, g_feats, scoring.expansion)
    return open_set_blocks(_similarities(q_feats, g_feats), shape, *labels, kind=SIMILARITY, impostors=impostors)


def _similarities(q_feats: np.ndarray, g_feats: np.ndarray):
    """``(start, rows)`` blocks of the (queries x gallery) inner products, about 16M scores a block."""
    rows = max(1, _SCORES_PER_BLOCK // max(1, len(g_feats)))
    return ((s, q_feats[s : s + rows] @ g_feats.T) for s in range(0, len(q_feats), rows))
