"""The evaluation cache: one JSON entry per (checkpoint, entry, dataset), beside the checkpoint.

Entries live in ``<checkpoint dir>/eval-cache/<slot>-<key>.json``, the images of an entry (recovered samples)
beside it as ``<slot>-<key>-<name>.png``; every file is written atomically and recorded as a cache entry
(:mod:`reidx.provenance`), and only such files are ever removed. An entry is :data:`MODEL_ENTRY` (what
the checkpoint holds, no dataset), :data:`RECOVERY_ENTRY`, or :func:`ranking_entry` / :func:`open_set_entry`
of an embedding mode and scoring (plain, re-ranked with its k1 / k2 / λ, AQE K; on one dataset). ``key``
hashes the checkpoint's SHA-256, the entry and the dataset's fingerprint (its manifest, info file and the
size and modification time of every test image), so a changed checkpoint, manifest or image is a miss;
``slot`` hashes the checkpoint file name, the entry and the dataset directory, so saving a new entry drops
the stale one (and its images). An entry whose image file is gone is a miss too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from reidx.console import err_console
from reidx.data.manifest import INFO_NAME, MANIFEST_NAME
from reidx.errors import ReidxError
from reidx.io import atomic_path, sha256_file
from reidx.metrics.table import METRICS
from reidx.provenance import remove_written

if TYPE_CHECKING:
    from reidx.report.plan import EvalDataset

CACHE_DIR = "eval-cache"
#: Bump when the layout or meaning of an entry changes: every older entry becomes a miss. The key also holds
#: the metric table's names (:data:`METRIC_NAMES`), so adding a metric makes every older entry a miss too.
CACHE_VERSION = 3
METRIC_NAMES = ",".join(spec.name for spec in METRICS)
#: The checkpoint's description (no dataset), and the recovery scores on a dataset.
MODEL_ENTRY, RECOVERY_ENTRY = "model", "recovery"


def ranking_entry(mode: str, scoring: str = "") -> str:
    """The entry of the ranking results of one embedding mode on a dataset, under one scoring (its
    ``Scoring.key``, which names every re-ranking or expansion parameter; "" = plain inner products)."""
    return f"ranking-{mode}" + (f"-{scoring}" if scoring else "")


def open_set_entry(mode: str, scoring: str = "") -> str:
    """The entry of the open-set operating points of one embedding mode and scoring on a dataset. Re-ranked and
    AQE entries end in "left-out": their impostor scores are computed without the query's identity (earlier
    entries, computed with it, are misses)."""
    return f"open-set-{mode}" + (f"-{scoring}-left-out" if scoring else "")


def dataset_fingerprint(directory: Path, frame: pd.DataFrame) -> str:
    """SHA-256 over the dataset's manifest and info files and the size and mtime of every image a report reads
    (query, HR source and gallery images of ``frame``, the manifest as read): an edited image is a change."""
    digest = hashlib.sha256()
    for name in (MANIFEST_NAME, INFO_NAME):
        digest.update(sha256_file(directory / name).encode())
    test = frame[frame["split"] != "train"]
    for path in sorted(set(test["path"]) | set(test["source"])):
        digest.update(f"{path}|{_stamp(Path(path))}\n".encode())
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    """Size and modification time of a file ("missing" when it cannot be read: evaluating it will say why)."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}|{stat.st_mtime_ns}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


#: Cache folders this process could not write: warned about once, then skipped quietly.
UNWRITABLE: set[Path] = set()


class ResultCache:
    """Cached evaluation entries of one checkpoint file (``fingerprint`` = SHA-256 of its bytes)."""

    def __init__(self, checkpoint: Path, fingerprint: str) -> None:
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.directory = checkpoint.parent / CACHE_DIR

    def key(self, entry: str, dataset: EvalDataset | None = None) -> str:
        """The content key of ``entry`` (on ``dataset``, None for an entry about the checkpoint alone)."""
        fingerprint = dataset.fingerprint if dataset is not None else ""
        return _short_hash(f"v{CACHE_VERSION}|{METRIC_NAMES}|{self.fingerprint}|{fingerprint}|{entry}")

    def load(self, entry: str, dataset: EvalDataset | None = None) -> dict[str, Any] | None:
        """The cached payload, or ``None`` on a miss (an unreadable entry, or one whose image file is gone, counts
        as a miss). An entry saved with images has them under ``"images"``: name -> PNG file."""
        for path in self.directory.glob(f"*-{self.key(entry, dataset)}.json"):
            try:
                record = json.loads(path.read_text())
                payload, files = record["payload"], record.get("images", {})
                images = {name: self.directory / file for name, file in files.items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return None
            if not all(image.is_file() for image in images.values()):
                return None
            return payload | {"images": images} if images else payload
        return None

    def save(
        self,
        entry: str,
        payload: dict[str, Any],
        dataset: EvalDataset | None = None,
        images: Mapping[str, Image.Image] | None = None,
    ) -> dict[str, Any]:
        """Store ``payload`` and ``images`` (name -> image, as PNG files) atomically and drop the stale version of
        the same checkpoint, entry and dataset. Returns the payload as :meth:`load` will read it; where the
        cache cannot be written, its ``"images"`` are the images themselves."""
        key = self.key(entry, dataset)
        where = str(dataset.directory.resolve()) if dataset is not None else ""
        slot = _short_hash(f"{self.checkpoint.name}|{where}|{entry}")
        fingerprint = dataset.fingerprint if dataset is not None else ""
        files = {name: f"{slot}-{key}-{name}.png" for name in images or {}}
        record = {"checkpoint": self.fingerprint, "dataset": fingerprint, "entry": entry, "payload": payload}
        record |= {"images": files} if files else {}
        try:
            for old in self.directory.glob(f"{slot}-*"):
                if not old.name.startswith(f"{slot}-{key}"):
                    remove_written(old, "cache")  # only an entry or image reidx wrote
            for name, image in (images or {}).items():
                with atomic_path(self.directory / files[name], "cache") as tmp:
                    image.save(tmp, format="PNG")
            with atomic_path(self.directory / f"{slot}-{key}.json", "cache") as tmp:
                tmp.write_text(json.dumps(record))
        except (OSError, ReidxError) as exc:  # a read-only or full run folder: the report still works, uncached
            if self.directory not in UNWRITABLE:
                UNWRITABLE.add(self.directory)
                reason = exc.message if isinstance(exc, ReidxError) else f"{self.directory}: {exc.strerror or exc}"
                err_console.print(f"warning: results not cached ({reason})", highlight=False, soft_wrap=True)
            return payload | {"images": dict(images)} if images else payload
        return payload | {"images": {name: self.directory / file for name, file in files.items()}} if files else payload
