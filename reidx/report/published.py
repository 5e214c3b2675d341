"""The paper's own numbers (cadnet.md §7, verbatim), printed beside ours only under ``--published``.

They are never mixed with measured rows: :mod:`reidx.report.markdown` and :mod:`reidx.report.export` render
them in their own tables, labelled :data:`PUBLISHED_LABEL`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOURCE = "Li et al., ICCV 2019 (CAD-Net)"
PUBLISHED_LABEL = "published (paper)"
#: The metrics of Table 1's columns (of the metric table), in the paper's order.
TABLE1_METRICS = ("rank1", "rank5", "rank10")

#: Table 1 column key -> the paper's column title.
TABLE1_DATASETS: dict[str, str] = {
    "cuhk03": "MLR-CUHK03",
    "viper": "MLR-VIPeR",
    "caviar": "CAVIAR",
    "market1501": "MLR-Market-1501",
    "dukemtmc": "MLR-DukeMTMC-reID",
}

Ranks = tuple[float, float, float]

#: Table 1, cross-resolution re-ID (%), Rank-1 / 5 / 10; ``None`` = not reported.
TABLE1: dict[str, dict[str, Ranks | None]] = {
    "JUDEA": {
        "cuhk03": (26.2, 58.0, 73.4),
        "viper": (26.0, 55.1, 69.2),
        "caviar": (22.0, 60.1, 80.8),
        "market1501": None,
        "dukemtmc": None,
    },
    "SLD²L": {
        "cuhk03": None,
        "viper": (20.3, 44.0, 62.0),
        "caviar": (18.4, 44.8, 61.2),
        "market1501": None,
        "dukemtmc": None,
    },
    "SDF": {
        "cuhk03": (22.2, 48.0, 64.0),
        "viper": (9.3, 38.1, 52.4),
        "caviar": (14.3, 37.5, 62.5),
        "market1501": None,
        "dukemtmc": None,
    },
    "SING": {
        "cuhk03": (67.7, 90.7, 94.7),
        "viper": (33.5, 57.0, 66.5),
        "caviar": (33.5, 72.7, 89.0),
        "market1501": (74.4, 87.8, 91.6),
        "dukemtmc": (65.2, 80.1, 84.8),
    },
    "CSR-GAN": {
        "cuhk03": (71.3, 92.1, 97.4),
        "viper": (37.2, 62.3, 71.6),
        "caviar": (34.7, 72.5, 87.4),
        "market1501": (76.4, 88.5, 91.9),
        "dukemtmc": (67.6, 81.4, 85.1),
    },
    "CamStyle": {
        "cuhk03": (69.1, 89.6, 93.9),
        "viper": (34.4, 56.8, 66.6),
        "caviar": (32.1, 72.3, 85.9),
        "market1501": (74.5, 88.6, 93.0),
        "dukemtmc": (64.0, 78.1, 84.4),
    },
    "FD-GAN": {
        "cuhk03": (73.4, 93.8, 97.9),
        "viper": (39.1, 62.1, 72.5),
        "caviar": (33.5, 71.4, 86.5),
        "market1501": (79.6, 91.6, 93.5),
        "dukemtmc": (67.5, 82.0, 85.3),
    },
    "CAD-Net (f only)": {
        "cuhk03": (77.6, 96.2, 98.5),
        "viper": (41.2, 66.3, 75.6),
        "caviar": (41.5, 75.3, 85.6),
        "market1501": (80.1, 90.6, 93.2),
        "dukemtmc": (73.4, 84.4, 86.8),
    },
    "CAD-Net (g only)": {
        "cuhk03": (79.7, 97.4, 98.7),
        "viper": (41.7, 66.4, 76.1),
        "caviar": (38.9, 73.1, 90.6),
        "market1501": (82.2, 91.3, 94.5),
        "dukemtmc": (74.1, 85.1, 88.2),
    },
    "CAD-Net": {
        "cuhk03": (82.1, 97.4, 98.8),
        "viper": (43.1, 68.2, 77.5),
        "caviar": (42.8, 76.2, 91.5),
        "market1501": (83.7, 92.7, 95.8),
        "dukemtmc": (75.6, 86.7, 89.6),
    },
}

#: The paper's protocol for each Table 1 column, in words (cadnet.md §6; the paper's text was not readable).
TABLE1_PROTOCOLS: dict[str, str] = {
    "cuhk03": "single-shot MLR convention (SING), 10 trials",
    "viper": "single-shot MLR convention (SING), 10 trials",
    "caviar": "single-shot MLR convention (SING), genuine LR, 10 trials",
    "market1501": "standard query/gallery, 1 trial",
    "dukemtmc": "standard query/gallery, 1 trial",
}


@dataclass(frozen=True)
class PublishedRow:
    """One method's published Rank-1/5/10 for the requested datasets (``None`` = not reported)."""

    method: str
    ranks: dict[str, Ranks | None]


def table1_key(dataset: str) -> str | None:
    """The Table 1 column of a dataset name such as ``mlr-market1501``, ``Market-1501`` or ``viper``."""
    name = re.sub(r"[^a-z0-9]", "", dataset.lower()).removeprefix("mlr")
    aliases = {"duke": "dukemtmc", "dukemtmcreid": "dukemtmc", "market": "market1501", "caviar4reid": "caviar"}
    name = aliases.get(name, name)
    return name if name in TABLE1_DATASETS else None


def table1_rows(datasets: list[str]) -> list[PublishedRow]:
    """Table 1 rows restricted to the Table 1 columns of ``datasets`` (in that order, no duplicates)."""
    keys = list(dict.fromkeys(key for key in map(table1_key, datasets) if key))
    if not keys:
        return []
    rows = [PublishedRow(method, {key: values[key] for key in keys}) for method, values in TABLE1.items()]
    return [row for row in rows if any(row.ranks.values())]
