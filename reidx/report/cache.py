"""The evaluation cache: one JSON entry per (checkpoint, dataset, mode), beside the checkpoint.

Entries live in ``<checkpoint dir>/eval-cache/<slot>-<key>.json``. ``key`` hashes the checkpoint's SHA-256,
the dataset's manifest fingerprint and the mode, so a changed checkpoint or manifest is a miss; ``slot``
hashes the checkpoint file name, dataset directory and mode, so saving a new entry drops the stale one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from reidx.console import err_console
from reidx.data.manifest import INFO_NAME, MANIFEST_NAME
from reidx.io import atomic_path, sha256_file

CACHE_DIR = "eval-cache"
#: Bump when the layout or meaning of an entry changes: every older entry becomes a miss.
CACHE_VERSION = 1


def dataset_fingerprint(directory: Path) -> str:
    """SHA-256 over the dataset's manifest and info files (what defines its query/gallery sets)."""
    digest = hashlib.sha256()
    for name in (MANIFEST_NAME, INFO_NAME):
        digest.update(sha256_file(directory / name).encode())
    return digest.hexdigest()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ResultCache:
    """Cached evaluation entries of one checkpoint file (``fingerprint`` = SHA-256 of its bytes)."""

    def __init__(self, checkpoint: Path, fingerprint: str) -> None:
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.directory = checkpoint.parent / CACHE_DIR

    def key(self, dataset_fingerprint: str, mode: str) -> str:
        """The content key of ``mode`` on the dataset with ``dataset_fingerprint``."""
        return _short_hash(f"v{CACHE_VERSION}|{self.fingerprint}|{dataset_fingerprint}|{mode}")

    def load(self, dataset_fingerprint: str, mode: str) -> dict[str, Any] | None:
        """The cached payload, or ``None`` on a miss (an unreadable entry counts as a miss)."""
        for path in self.directory.glob(f"*-{self.key(dataset_fingerprint, mode)}.json"):
            try:
                return json.loads(path.read_text())["payload"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return None

    def save(self, dataset_dir: Path | None, dataset_fingerprint: str, mode: str, payload: dict[str, Any]) -> None:
        """Store ``payload`` atomically and drop the stale entry of the same checkpoint, dataset and mode
        (``dataset_dir`` None: an entry about the checkpoint alone)."""
        key = self.key(dataset_fingerprint, mode)
        slot = _short_hash(f"{self.checkpoint.name}|{dataset_dir.resolve() if dataset_dir else ''}|{mode}")
        entry = {"checkpoint": self.fingerprint, "dataset": dataset_fingerprint, "mode": mode, "payload": payload}
        try:
            for old in self.directory.glob(f"{slot}-*.json"):
                if not old.name.endswith(f"-{key}.json"):
                    old.unlink(missing_ok=True)
            with atomic_path(self.directory / f"{slot}-{key}.json") as tmp:
                tmp.write_text(json.dumps(entry))
        except OSError as exc:  # a read-only run folder: the report still works, uncached
            err_console.print(f"warning: results not cached, cannot write {self.directory}: {exc.strerror or exc}")
