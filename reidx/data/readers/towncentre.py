"""Oxford Town Centre (Benfold, Reid, CVPR 2011), as in PETA: extra training identities.

Layout: one folder of ``TRACK_FRAME.jpg`` (TRACK = identity, FRAME = frame number). 222 tracks, 6,967 frames
of one camera, 1-157 frames per track; consecutive frames are near-duplicates, so ``--frames-per-id N``
keeps N frames per track evenly spaced in frame order. Training only (:class:`TrainingOnlyReader`, camid 0).
"""

from __future__ import annotations

import re
from pathlib import Path

from reidx.data.base import TrainingOnlyReader
from reidx.data.registry import register_dataset

NAME = re.compile(r"^(\d+)_(\d+)$")


@register_dataset("towncentre")
class TownCentre(TrainingOnlyReader):
    """TownCentre: every (kept) frame trains; no test split."""

    folder = "TownCentre"
    layout = "a folder of TRACK_FRAME.jpg images (or TownCentre/ holding them)"

    def parse(self, path: Path) -> tuple[int, tuple[str | int, ...]] | None:
        match = NAME.match(path.stem)
        if match is None:
            return None
        track, frame = (int(group) for group in match.groups())
        return track, (frame,)
