"""DukeMTMC-reID (Zheng et al., ICCV 2017): the standard 702/1,110-identity split, Market-style layout."""

from __future__ import annotations

from pathlib import Path

from reidx.data.base import Options, Source, StandardSplitReader, existing_root
from reidx.data.readers.market1501 import read_standard_layout
from reidx.data.registry import register_dataset


@register_dataset("dukemtmc")
class DukeMTMC(StandardSplitReader):
    """DukeMTMC-reID, multi-shot; names ``PPPP_cC_fFFFFFFF.jpg``, camid = C as written."""

    layout = (
        "a folder with bounding_box_train/, bounding_box_test/ and query/ (or dukemtmc-reid/ holding DukeMTMC-reID/)"
    )

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        candidates = (".", "DukeMTMC-reID", "dukemtmc-reid", "dukemtmc-reid/DukeMTMC-reID")
        return read_standard_layout(root, candidates, self)
