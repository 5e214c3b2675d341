"""3DPeS (Baltieri, Vezzani, Cucchiara, ACM J-HGBU 2011), as in PETA: extra training identities.

Layout: one folder of ``PID_SEQ_FRAME_N_RGB.png`` (PID = identity; SEQ a sequence number, not a camera,
sometimes with a letter prefix: ``166_B_1280_FRAME_105_RGB.png``; N the frame). 193 identities, 1,012 images.
No camera labels: training only (:class:`TrainingOnlyReader`, every image camid 0); frames ordered by
(SEQ, N) for ``--frames-per-id``.
"""

from __future__ import annotations

import re
from pathlib import Path

from reidx.data.base import TrainingOnlyReader
from reidx.data.registry import register_dataset

NAME = re.compile(r"^(\d+)_(?:([A-Za-z]+)_)?(\d+)_FRAME_(\d+)_RGB$", re.IGNORECASE)


@register_dataset("3dpes")
class ThreeDPeS(TrainingOnlyReader):
    """3DPeS: every image trains; no test split."""

    folder = "3DPeS"
    layout = "a folder of PID_SEQ_FRAME_N_RGB.png images (or 3DPeS/ holding them)"

    def parse(self, path: Path) -> tuple[int, tuple[str | int, ...]] | None:
        match = NAME.match(path.stem)
        if match is None:
            return None
        pid, prefix, sequence, frame = match.groups()
        return int(pid), (prefix or "", int(sequence), int(frame))
