"""How reidx proves it wrote a file before it replaces or deletes it: the record of written files and the
registry of temporaries.

reidx never replaces or deletes a file because of its name or its contents' format; only what one of these
two records shows it wrote:

* **Written files.** A file output that stands alone (a report, a plot, a montage, a grid, an ONNX export, a
  cache entry, a checkpoint saved outside a run) is recorded in ``.reidx-files.jsonl`` in its folder just
  before it is renamed into place: one JSON line per write holding the file's name, its kind
  (:data:`FILE_KINDS`), size and SHA-256. An existing file may be replaced only when its bytes are a recorded
  write of the same kind under that name; anything else (a user's file, a file copied in or edited since, the
  file a link points at) is refused, and the refusal never suggests ``--overwrite``. Lines are appended with
  one ``write`` (``O_APPEND``), so writers of different files in one folder need no lock, and a torn last line
  (a kill mid-write) is ignored. Files inside a folder output (an index, a run, a dataset, recovered images)
  follow that folder's rule instead (:mod:`reidx.outputs`: its ``.reidx-output.json`` marker and its lock).
* **Temporaries.** Every temporary (``.NAME.PID-TAG.tmp``, see :data:`reidx.io.TEMPORARY`) is made under the
  one-writer lock of the output it belongs to (:func:`reidx.io.exclusive_lock`) and registered in that lock
  file: its random name is claimed before it is created (exclusively: a name already taken is voided and
  another drawn), then its device and inode are recorded. A writer killed by ``kill -9`` leaves the lock file
  behind; the next writer to take the lock removes the temporaries registered there that are still the same
  files (same name, device and inode, or claimed and never recorded: killed in between), and nothing else. A
  file merely named like a temporary is never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path, PurePosixPath

from reidx.errors import ReidxError

RECORD_NAME = ".reidx-files.jsonl"
#: Kinds of stand-alone file outputs: a file is replaced only by a write of its own kind.
FILE_KINDS = {
    "report": "report",
    "image": "image",
    "onnx": "ONNX export",
    "cache": "cache entry",
    "checkpoint": "checkpoint",
    "file": "file",
}
#: The first line of a lock file: ``reidx-lock PID``; each further line registers one temporary (JSON).
LOCK_HEADER = re.compile(r"^reidx-lock (\d+)$")


def file_label(kind: str) -> str:
    """``"a report"``, ``"an ONNX export"``: the kind in a sentence."""
    name = FILE_KINDS[kind]
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


# --- written files ------------------------------------------------------------------------------------------


def _records(folder: Path, name: str) -> list[dict]:
    """The readable records of writes of ``name`` in ``folder`` (oldest first)."""
    try:
        lines = (folder / RECORD_NAME).read_bytes().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line
        if isinstance(record, dict) and record.get("name") == name and record.get("kind") in FILE_KINDS:
            found.append(record)
    return found


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def written_kind(path: Path) -> str | None:
    """The kind reidx recorded for the current bytes of the regular file ``path``; None when it has no such
    record (reidx cannot prove it wrote it). ``path`` must not be a link (resolve it first)."""
    if path.is_symlink() or not path.is_file():
        return None
    size = path.stat().st_size
    candidates = [record for record in _records(path.parent, path.name) if record.get("size") == size]
    if not candidates:
        return None
    digest = sha256_file(path)
    return next((record["kind"] for record in reversed(candidates) if record.get("sha256") == digest), None)


def record_written(path: Path, content: Path, kind: str) -> None:
    """Record that reidx is putting the bytes of ``content`` at ``path`` (a ``kind`` file). On failure the
    record file is left as it was."""
    line = json.dumps(
        {"name": path.name, "kind": kind, "size": content.stat().st_size, "sha256": sha256_file(content)},
        ensure_ascii=True,
    )
    record = path.parent / RECORD_NAME
    new = not record.exists()
    handle = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        start = os.fstat(handle).st_size
        try:
            os.write(handle, (line + "\n").encode())
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, start)
                if new:
                    record.unlink()
            raise
    finally:
        os.close(handle)


def check_replaceable(path: Path, kind: str, shown: str, fix: str) -> bool:
    """Refuse to write a ``kind`` file at ``path`` (the real file: no link) unless it is absent or a file
    reidx recorded writing as that kind; True when such a file is there. ``shown`` names it in messages."""
    if not path.exists():
        return False
    if not path.is_file():
        raise ReidxError(f"{shown} is not a regular file; reidx never replaces it", fix)
    written = written_kind(path)
    if written is None:
        raise ReidxError(f"{shown} exists and was not written by reidx; reidx never replaces it", fix)
    if written != kind:
        raise ReidxError(f"{shown} holds {file_label(written)} reidx wrote, not {file_label(kind)}", fix)
    return True


def remove_written(path: Path, kind: str) -> bool:
    """Delete ``path`` if it is a ``kind`` file reidx recorded writing (True); anything else stays (False)."""
    if written_kind(path) != kind:
        return False
    path.unlink(missing_ok=True)
    return True


# --- temporaries registered in lock files -------------------------------------------------------------------


def lock_header(pid: int) -> bytes:
    """The first line of a lock file held by process ``pid``."""
    return f"reidx-lock {pid}\n".encode()


def lock_holder(text: bytes) -> str:
    """The process id a lock file names ("unknown" when it names none)."""
    first = text.decode(errors="replace").split("\n", 1)[0].strip()
    match = LOCK_HEADER.match(first)
    return match[1] if match else first if first.isdigit() else "unknown"


def registration(folder: Path, temporary: Path, like: Path | None = None, state: str = "made") -> bytes:
    """The lock-file line registering ``temporary`` (below ``folder``, the lock file's folder). ``state``:
    "claimed" (its random name, before it is created: nothing may exist there yet), "made" (the file or folder
    it is, or the one ``like`` is, about to be moved there: its device and inode) or "void" (a claimed name
    that turned out taken: never reidx's)."""
    relative = (temporary.parent.resolve() / temporary.name).relative_to(folder).as_posix()
    entry: dict[str, object] = {"temporary": relative, "state": state}
    if state == "made":
        status = (like or temporary).lstat()
        entry |= {"dev": status.st_dev, "ino": status.st_ino}
    return (json.dumps(entry) + "\n").encode()


def remove_registered(text: bytes, folder: Path, temporary_name: re.Pattern[str]) -> None:
    """Delete the temporaries a lock file's ``text`` registers (below ``folder``, named as temporaries):
    those made that are still the same file or folder (device and inode), and those claimed but not yet
    recorded as made (the writer was killed in between: it created the name, unused until it claimed it);
    nothing else. A lock file without a reidx header registers nothing."""
    lines = text.splitlines()
    if not lines or not LOCK_HEADER.match(lines[0].decode(errors="replace")):
        return
    entries: dict[str, list[dict]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            entries.setdefault(str(entry["temporary"]), []).append(entry)
        except (ValueError, KeyError, TypeError):
            continue
    for name, registered in entries.items():
        relative = PurePosixPath(name)
        states = {entry.get("state") for entry in registered}
        if relative.is_absolute() or ".." in relative.parts or not temporary_name.match(relative.name):
            continue
        path = folder.joinpath(*relative.parts)
        try:
            status = path.lstat()
        except OSError:
            continue
        made = {(entry.get("dev"), entry.get("ino")) for entry in registered if entry.get("state") == "made"}
        proven = (status.st_dev, status.st_ino) in made if made else states == {"claimed"}
        if not proven or "void" in states or path.is_symlink():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
