"""Market-1501 (Zheng et al., ICCV 2015): the standard 751/750-identity split.

Layout: ``bounding_box_train/``, ``bounding_box_test/`` and ``query/`` holding ``PPPP_cCsS_FFFFFF_NN.jpg``.
pid -1 (junk detections) is dropped; pid 0 (distractors) stays in the gallery; camid = C as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reidx.data.base import (
    Options,
    Source,
    StandardSplitReader,
    existing_root,
    find_layout,
    list_images,
    named_records,
)
from reidx.data.registry import register_dataset

STANDARD_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def read_standard_layout(root: Path, candidates: Sequence[str], reader: StandardSplitReader) -> Source:
    """Find the three standard folders under one of ``candidates`` and read them."""
    base = find_layout(root, candidates, [f"{name}/" for name in STANDARD_FOLDERS], reader)
    train, query, gallery = (named_records(list_images(base / name)) for name in STANDARD_FOLDERS)
    return Source(root=base, train=train, query=query, gallery=gallery)


@register_dataset("market1501")
class Market1501(StandardSplitReader):
    """Market-1501, multi-shot (protocols.md §2-3)."""

    layout = (
        "a folder with bounding_box_train/, bounding_box_test/ and query/ "
        "(or market1501/ holding Market-1501-v15.09.15/)"
    )

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        candidates = (".", "Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15")
        return read_standard_layout(root, candidates, self)
