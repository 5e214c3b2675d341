"""SARC3D (Baltieri, Vezzani, Cucchiara, ICIAP 2011), as in PETA: extra training identities.

Layout: one folder of ``PPP_VIEW.png``, VIEW = front, back, left or right (any case: one real file spells
``Right``). 50 identities, 4 views each. A view is not a camera: training only (:class:`TrainingOnlyReader`,
every image camid 0); ``--frames-per-id`` keeps views in the order front, back, left, right.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidx.data.base import TrainingOnlyReader
from reidx.data.registry import register_dataset

VIEWS = ("front", "back", "left", "right")
NAME = re.compile(rf"^(\d+)_({'|'.join(VIEWS)})$", re.IGNORECASE)


@register_dataset("sarc3d")
class SARC3D(TrainingOnlyReader):
    """SARC3D: every image trains; no test split."""

    folder = "SARC3D"
    layout = "a folder of PPP_VIEW.png images, VIEW = front, back, left or right (or SARC3D/ holding them)"

    def parse(self, path: Path) -> tuple[int, tuple[str | int, ...]] | None:
        match = NAME.match(path.stem)
        if match is None:
            return None
        return int(match.group(1)), (VIEWS.index(match.group(2).lower()),)
