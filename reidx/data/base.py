"""The reader contract: what a dataset reader finds on disk and how it splits it for one trial.

A reader returns a :class:`Source`: either the dataset's standard ``train``/``query``/``gallery`` lists,
or one ``images`` list that :meth:`DatasetReader.split` divides per trial. Every list holds
:class:`Record` ``(path, pid, camid)`` with absolute paths, sorted by path. camids are compared only for
equality. A Market-style name ``PID_cCAM...`` means camid CAM as written (``c1`` is 1, ``c0`` is 0) in every
reader and in ``reidx embed``/``search`` (:func:`market_identity` is the one parser); families without
such names number their cameras from 0.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from reidx.errors import ReidxError
from reidx.images import list_images
from reidx.options import option

#: Market-1501 / DukeMTMC-reID names: ``PPPP_cC...`` (pid -1 is junk; at most 18 digits, so an int64).
MARKET_NAME = re.compile(r"^(-1|\d{1,18})_c(\d{1,18})")
JUNK_PID = -1


class Record(NamedTuple):
    """One image: absolute path, identity, camera."""

    path: str
    pid: int
    camid: int


@dataclass
class Source:
    """What a reader found: standard splits, or ``images`` to split per trial, plus dataset facts."""

    root: Path
    train: list[Record] = field(default_factory=list)
    query: list[Record] = field(default_factory=list)
    gallery: list[Record] = field(default_factory=list)
    images: list[Record] = field(default_factory=list)
    facts: dict[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """One trial's train (HR), query (to be made LR) and gallery (HR) records."""

    train: list[Record]
    query: list[Record]
    gallery: list[Record]


@dataclass(frozen=True)
class Options:
    """Options a reader may use; ``None`` means the reader's default. Each one with help is the ``reidx prepare``
    flag of its name (generated from this class), refused for readers that do not list it in ``uses``, and
    checked against its ``minimum``: a reader's new option is one field here."""

    seed: int = 0
    workers: int = 4
    test_ids: int | None = option(None, "Test ids per trial (default: the protocol's).", minimum=1)
    query_camera: int | None = option(None, "The query camid (viper, synthetic, folder).")
    ids: int | None = option(None, "synthetic: identities (default 100).", minimum=1)
    cameras: int | None = option(None, "synthetic: cameras (default 4).", minimum=1)
    images_per_camera: int | None = option(None, "synthetic: images per id and camera (default 4).", minimum=1)
    frames_per_id: int | None = option(
        None, "Keep N frames per id, evenly spaced (3dpes, sarc3d, towncentre).", minimum=1
    )


class DatasetReader(ABC):
    """One dataset family: its layout on disk and its protocol (protocols.md §2)."""

    name: ClassVar[str] = ""
    protocol: ClassVar[str] = "multi-shot"
    trials: ClassVar[int] = 1
    #: Where the reader looks, in words (shown when the root is in the wrong layout).
    layout: ClassVar[str] = ""
    #: How query and gallery are built, in one line (stored in dataset.json).
    rule: ClassVar[str] = ""
    #: Optional :class:`Options` fields this reader honours (others are refused when given).
    uses: ClassVar[frozenset[str]] = frozenset()
    #: Queries are genuine LR images used as they are, not down-sampled (CAVIAR).
    native_queries: ClassVar[bool] = False
    needs_root: ClassVar[bool] = True
    #: Identities without camera labels: every image trains, nothing is tested (:class:`TrainingOnlyReader`).
    training_only: ClassVar[bool] = False

    @abstractmethod
    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        """Find the images; images the reader has to create (synthetic, CUHK03 .mat) go under ``workdir``."""

    @abstractmethod
    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        """Train/query/gallery for one trial; every random choice comes from ``rng``."""

    def lr_camera(self, source: Source, options: Options) -> str:
        """Which images are the low-resolution side, in words."""
        return "query images (down-sampled)"

    def settings(self, options: Options) -> dict[str, Any]:
        """What ``dataset.json`` records of the options this reader used (none by default)."""
        return {}


class TrainingOnlyReader(DatasetReader):
    """A set of identities without camera labels (3DPeS, SARC3D, TownCentre): extra training identities only.

    Every image is camid 0 (one camera: no camera is labelled, and training needs only pids); every trial's
    split is all images as train and no query or gallery, so ``report`` has nothing to test on. With
    ``frames_per_id`` N an identity with more than N images keeps N of them evenly spaced along
    :meth:`frame_order` from a seeded offset (consecutive track frames are near-duplicates)."""

    training_only = True
    #: The set's folder name, also looked for below ``--root``.
    folder: ClassVar[str] = ""
    uses = frozenset({"frames_per_id"})
    rule = "training only: every image is a training image (no camera labels, so no query or gallery)"

    @abstractmethod
    def parse(self, path: Path) -> tuple[int, tuple[str | int, ...]] | None:
        """``(pid, frame order key)`` from a file name, or None when the name is not this set's."""

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        root = existing_root(root, self)
        for base in (root, root / self.folder):
            parsed = [(path, self.parse(path)) for path in list_images(base)] if base.is_dir() else []
            if any(identity is not None for _, identity in parsed):
                break
        else:
            raise ReidxError(f"{root} is not a {self.name} folder: expected {self.layout}", "point --root at it")
        unnamed = [path for path, identity in parsed if identity is None]
        if unnamed:
            raise ReidxError(f"cannot parse {unnamed[0]}: expected {self.layout}", "rename or remove the file")
        return Source(root=base, images=sorted(Record(str(path), identity[0], 0) for path, identity in parsed))

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        if options.frames_per_id is None:
            return Split(list(source.images), [], [])
        kept: list[Record] = []
        for _, group in sorted(by_pid(source.images).items()):
            frames = sorted(group, key=self.frame_key)
            kept += evenly_spaced(frames, options.frames_per_id, rng)
        return Split(sorted(kept), [], [])

    def frame_key(self, record: Record) -> tuple[str | int, ...]:
        """Where ``record`` sits in its identity's frame order."""
        return self.parse(Path(record.path))[1]

    def lr_camera(self, source: Source, options: Options) -> str:
        return "none (training only)"

    def settings(self, options: Options) -> dict[str, Any]:
        return {} if options.frames_per_id is None else {"frames_per_id": options.frames_per_id}


def evenly_spaced(frames: Sequence[Record], count: int, rng: np.random.Generator) -> list[Record]:
    """``count`` of ``frames`` spaced ``len / count`` apart from a random offset (all of them when fewer)."""
    if len(frames) <= count:
        return list(frames)
    offset = rng.random()
    return [frames[int((index + offset) * len(frames) / count)] for index in range(count)]


class StandardSplitReader(DatasetReader):
    """A dataset shipped with its own train/query/gallery split (one trial)."""

    rule: ClassVar[str] = "standard query set down-sampled; standard gallery HR"

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        return Split(source.train, source.query, source.gallery)


def existing_root(root: Path | None, reader: DatasetReader) -> Path:
    """``root`` as an absolute existing directory (or file, for a CSV), else a one-line error."""
    if root is None:
        raise ReidxError(f"--root is required for {reader.name}", f"point it at the dataset: {reader.layout}")
    root = Path(root).expanduser()
    if not root.exists():
        raise ReidxError(f"dataset root {root} does not exist", f"point --root at the dataset: {reader.layout}")
    return root.resolve()


def find_layout(root: Path, candidates: Sequence[str], required: Sequence[str], reader: DatasetReader) -> Path:
    """The first of ``root / candidate`` holding every ``required`` entry, else a one-line layout error."""
    for candidate in candidates:
        base = root / candidate
        if all((base / entry).exists() for entry in required):
            return base
    nested = ", ".join(f"{candidate}/" for candidate in candidates if candidate != ".")
    raise ReidxError(
        f"{root} is not a {reader.name} folder: expected {', '.join(required)} in it"
        + (f" (or in {nested})" if nested else ""),
        "point --root at the dataset folder",
    )


def market_identity(path: str | Path) -> tuple[int, int] | None:
    """``(pid, camid)`` from a Market-style file name (camid = the camera number as written), else None."""
    match = MARKET_NAME.match(Path(path).name)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def parse_market_name(path: Path) -> tuple[int, int]:
    """``(pid, camid)`` from a Market-style name (see :func:`market_identity`), else a one-line error."""
    identity = market_identity(path)
    if identity is None:
        raise ReidxError(
            f"cannot parse {path}: expected a Market-style name PID_cCAM..., e.g. 0002_c1s1_000451_03.jpg",
            "rename or remove the file",
        )
    return identity


def named_records(paths: Iterable[Path]) -> list[Record]:
    """Records of Market-style names (unparseable ones refused), junk (pid -1) dropped."""
    records = [Record(str(path), *parse_market_name(path)) for path in paths]
    return [record for record in records if record.pid != JUNK_PID]


def ids_of(records: Iterable[Record]) -> list[int]:
    """Sorted distinct pids."""
    return sorted({record.pid for record in records})


def held_out_count(n_ids: int, requested: int | None, default: int) -> int:
    """How many ids go to test: ``requested`` if given, else ``default``; both sides keep >= 1 id."""
    count = default if requested is None else requested
    if n_ids < 2:
        raise ReidxError(
            f"cannot split {n_ids} identit{'y' if n_ids == 1 else 'ies'} into training and test ids: "
            "it takes at least 2",
            "add images of more people to the dataset",
        )
    if not 1 <= count < n_ids:
        raise ReidxError(
            f"cannot hold out {count} test ids from {n_ids} ids",
            f"choose --test-ids between 1 and {n_ids - 1}",
        )
    return count


def split_ids(ids: Sequence[int], n_test: int, rng: np.random.Generator) -> tuple[set[int], set[int]]:
    """``(train ids, test ids)``: ``n_test`` ids drawn without replacement."""
    chosen = rng.choice(len(ids), size=n_test, replace=False)
    test = {ids[i] for i in chosen}
    return set(ids) - test, test


def by_pid(records: Iterable[Record]) -> dict[int, list[Record]]:
    """Records grouped by pid, each group in input order."""
    groups: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.pid].append(record)
    return groups


#: :func:`per_camera_query_split` in words (for the readers' ``rule``).
QUERY_RULE = (
    "per test id, each camera with two or more of its images gives one random query and the rest gallery; "
    "an id with one image per camera (pairs) gets one query from a random camera, the rest gallery"
)


def per_camera_query_split(
    records: Sequence[Record], rng: np.random.Generator, n_test: int, query_camera: int | None
) -> Split:
    """The rule for data without a split (:data:`QUERY_RULE`): half the ids train; for each test id,
    every camera with two or more of its images gives one random query (the rest gallery) and a camera
    with one image is gallery; an id with one image per camera (pairs, as in GRID or VIPeR) gets one query
    from a random camera. So every query has a gallery image of its person wherever the data allow it.
    With ``query_camera``, every test image of that camera is a query and the other cameras form the gallery."""
    train_ids, test_ids = split_ids(ids_of(records), n_test, rng)
    train = [r for r in records if r.pid in train_ids]
    query: list[Record] = []
    gallery: list[Record] = []
    if query_camera is not None:
        for record in records:
            if record.pid in test_ids:
                (query if record.camid == query_camera else gallery).append(record)
        return Split(train, query, gallery)
    cameras: dict[int, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.pid in test_ids:
            cameras[record.pid][record.camid].append(record)
    for pid in sorted(cameras):
        groups = [cameras[pid][camid] for camid in sorted(cameras[pid])]
        if all(len(group) == 1 for group in groups):
            pick = int(rng.integers(len(groups)))
            query.append(groups[pick][0])
            gallery.extend(group[0] for group in groups[:pick] + groups[pick + 1 :])
            continue
        for group in groups:
            if len(group) == 1:
                gallery.extend(group)
                continue
            pick = int(rng.integers(len(group)))
            query.append(group[pick])
            gallery.extend(group[:pick] + group[pick + 1 :])
    return Split(train, sorted(query), sorted(gallery))
