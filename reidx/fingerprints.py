"""Remembered SHA-256 fingerprints of checked model files, so a cold ``reidx search`` need not hash them: a
checkpoint's whole bytes, and an ONNX export's graph (``part="graph"``, an entry of its own).

An entry holds the file's device, inode, size, mtime and ctime (nanoseconds). Writing a file changes its
mtime and ctime, replacing it (rename, copy) its inode or times, and no user can set a ctime (the kernel sets
it to the current time on every change), so while all five match, the bytes are those that were hashed and
checked. A file changed less than :data:`SETTLED_NS` before it was hashed is not remembered: a change in the
same clock tick could leave its times equal. The cache is one JSON file in ``$REIDX_CACHE_DIR`` (default
``$XDG_CACHE_HOME/reidx``, else ``~/.cache/reidx``); deleting it only costs a re-hash. Failing to read or
write it is never an error: the file is then hashed as before.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from reidx.io import atomic_path, exclusive_lock

CACHE_ENV = "REIDX_CACHE_DIR"
CACHE_NAME = "checkpoint-sha256.json"
#: How long a file must have been unchanged when hashed for its fingerprint to be remembered.
SETTLED_NS = 2_000_000_000
#: Entries kept (the most recently remembered).
MAX_ENTRIES = 256

StatKey = list[int]


def cache_path() -> Path:
    """The cache file."""
    folder = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reidx"
    return Path(folder) / CACHE_NAME


def stat_key(path: Path) -> StatKey:
    """What any change to ``path`` changes: device, inode, size, mtime and ctime in nanoseconds."""
    info = os.stat(path)
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _entries() -> dict:
    try:
        entries = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def entry_name(path: Path, part: str = "") -> str:
    """The cache entry of ``path`` (its whole bytes), or of one ``part`` of it."""
    return f"{path.resolve()}#{part}" if part else str(path.resolve())


def recall(path: Path, key: StatKey, part: str = "") -> str | None:
    """The remembered SHA-256 of ``path`` (or of its ``part``) if its stat ``key`` is still the one it was
    hashed with."""
    entry = _entries().get(entry_name(path, part))
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    return None


def remember(path: Path, key: StatKey, sha256: str, part: str = "") -> None:
    """Remember ``path``'s SHA-256 (or its ``part``'s) under its stat ``key`` (read before the bytes were), if it
    had settled."""
    if time.time_ns() - max(key[3], key[4]) < SETTLED_NS:
        return
    entries = _entries()
    name = entry_name(path, part)
    entries.pop(name, None)
    entries[name] = {"key": key, "sha256": sha256}
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        # reidx's own cache folder: written under its lock (its files are reidx's), not the file rule of outputs
        with exclusive_lock(cache_path().parent, "fingerprint cache", wait=True), atomic_path(cache_path()) as tmp:
            tmp.write_text(json.dumps(kept), encoding="utf-8")
    except Exception:  # noqa: BLE001 - the cache is an optimisation: never fail a command for it
        return
