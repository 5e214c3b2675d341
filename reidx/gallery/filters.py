"""Metadata filters on a gallery search: which entries a query may get back (cameras, identities, only
other cameras than the query's). One spec for ``reidx search``, ``reidx serve`` and every gallery backend.

A backend either translates :meth:`GalleryFilter.conditions` into its own filter language or, like FAISS,
over-fetches ranked hits and keeps those that pass (:func:`filtered_top_k`). Either way the result is exact:
the top k, in the unfiltered order, among the entries that pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from reidx.errors import ReidxError
from reidx.gallery.ranking import Search, clamp_k
from reidx.options import option

if TYPE_CHECKING:
    import pandas as pd

    from reidx.gallery.directory import MetadataColumns


class Condition(NamedTuple):
    """One test on a metadata column: its value is (``keep`` True) or is not (False) one of ``values``."""

    column: str
    keep: bool
    values: tuple[int, ...]


@dataclass(frozen=True)
class GalleryFilter:
    """Keep gallery entries from ``cameras`` (all when empty), of ``pids`` (all when empty) and, with
    ``other_cameras``, from another camera than the query's (values deduplicated and sorted)."""

    cameras: tuple[int, ...] = option((), "Only gallery entries of this camid; repeatable.", flag="--camera")
    pids: tuple[int, ...] = option((), "Only gallery entries of this pid; repeatable.", flag="--pid")
    other_cameras: bool = option(False, "Only gallery entries from another camera than the query's.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(sorted(set(self.cameras))))
        object.__setattr__(self, "pids", tuple(sorted(set(self.pids))))

    @classmethod
    def of(cls, cameras: Sequence[int] | None = None, pids: Sequence[int] | None = None, other_cameras: bool = False):
        """The filter from option values (None or empty: no condition)."""
        return cls(tuple(cameras or ()), tuple(pids or ()), other_cameras)

    @property
    def active(self) -> bool:
        """Whether any entry can be filtered out."""
        return bool(self.cameras or self.pids or self.other_cameras)

    def conditions(self, query_camid: int, query: str = "the query") -> list[Condition]:
        """The tests an entry must pass for a query from camera ``query_camid`` (-1: unknown)."""
        tests = []
        if self.cameras:
            tests.append(Condition("camid", True, self.cameras))
        if self.pids:
            tests.append(Condition("pid", True, self.pids))
        if self.other_cameras:
            if query_camid < 0:
                raise ReidxError(
                    f"other cameras than the query's were asked for, but the camera of {query} is unknown",
                    "name the query Market-style (PID_cCAM...) or give the query's camera (--query-camera N)",
                )
            tests.append(Condition("camid", False, (query_camid,)))
        return tests

    def mask(self, metadata: MetadataColumns | pd.DataFrame, query_camid: int, query: str = "the query") -> np.ndarray:
        """One bool per metadata row: whether that entry passes for this query."""
        passes = np.ones(len(metadata), dtype=bool)
        for column, keep, values in self.conditions(query_camid, query):
            passes &= np.isin(np.asarray(metadata[column]), values) == keep
        return passes

    def to_dict(self) -> dict:
        return {"cameras": list(self.cameras), "pids": list(self.pids), "other_cameras": self.other_cameras}


#: The filter that lets every entry through.
NO_FILTER = GalleryFilter()


def allowed_rows(
    spec: GalleryFilter, metadata: MetadataColumns | pd.DataFrame, camids: Sequence[int], queries: Sequence[str]
) -> np.ndarray:
    """(Q, N) bools: which gallery entries each query may get back (one mask per distinct query camera)."""
    masks: dict[int, np.ndarray] = {}
    for camid, query in zip(camids, queries, strict=True):
        if camid not in masks:
            masks[camid] = spec.mask(metadata, camid, query)
    return np.stack([masks[camid] for camid in camids]) if masks else np.zeros((0, len(metadata)), dtype=bool)


def filtered_top_k(search: Search, vectors: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)``, each (Q, k): per row the k best entries that ``allowed`` lets through, in the
    order ``search`` ranks them (id -1, score -inf, where fewer pass).

    ``search`` returns a prefix of one fixed ranking, so the passing entries of its first n hits are the
    best passing entries; n starts at twice the k the filter's pass rate needs and doubles per row until
    k pass, every passing entry is seen, or the index has no more hits.
    """
    total = allowed.shape[1]
    k = clamp_k(k, total)
    scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
    ids = np.full((len(vectors), k), -1, dtype=np.int64)
    wanted = np.minimum(allowed.sum(axis=1), k)
    rows = np.flatnonzero(wanted > 0)
    fetch = min(total, math.ceil(2 * k * total / max(1, int(allowed.sum(axis=1).min(initial=total)))))
    while rows.size:
        found_scores, found_ids = search(vectors[rows], fetch)
        unfinished = []
        for row, row_scores, row_ids in zip(rows, found_scores, found_ids, strict=True):
            valid = row_ids >= 0
            keep = np.flatnonzero(valid & allowed[row, np.where(valid, row_ids, 0)])[:k]
            scores[row, : len(keep)], ids[row, : len(keep)] = row_scores[keep], row_ids[keep]
            exhausted = fetch >= total or len(row_ids) < fetch or not valid.all()
            if len(keep) < wanted[row] and not exhausted:
                unfinished.append(row)
        rows, fetch = np.array(unfinished, dtype=np.int64), min(total, 2 * fetch)
    return scores, ids
