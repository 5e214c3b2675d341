"""File helpers: atomic writes, the one-writer lock of an output, content hashes; ``load_image`` and
``sha256_file`` are re-exported from :mod:`reidx.images` and :mod:`reidx.provenance`.

Every temporary reidx writes is named ``.NAME.PID-TAG.tmp`` beside (or inside) what it becomes and is made
under the lock of that output, which registers it: a killed writer's temporaries are removed by the next
writer of that output, and nothing is ever deleted for its name alone (:mod:`reidx.provenance`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reidx.errors import ReidxError
from reidx.images import load_image  # noqa: F401 - re-exported: reidx.io.load_image is the documented name
from reidx.provenance import (
    check_replaceable,
    lock_header,
    lock_holder,
    record_written,
    registration,
    remove_registered,
    sha256_file,  # noqa: F401 - re-exported: reidx.io.sha256_file is the documented name
)

#: A temporary file or folder reidx creates: ``.NAME.PID-TAG.tmp`` (TAG: 8 random characters, or "old").
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?:[a-z0-9_]{8}|old)\.tmp$")
#: The characters of a temporary's random TAG.
TAG_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
#: OSError numbers that mean "this location cannot be written", and what to tell the user.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file size limit is reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EISDIR: "a folder is in the way of a file",
}
SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: What the body of a write can hit that is about the output (EACCES there may be an unreadable input).
OUTPUT_ERRORS = SPACE_ERRORS | {errno.EROFS}


@dataclass
class HeldLock:
    """A lock this process holds: its open lock file and the temporary folders registered in it."""

    handle: int
    lock: Path
    folders: list[Path] = field(default_factory=list)

    def register(self, temporary: Path, like: Path | None = None, state: str = "made") -> None:
        """Register ``temporary`` (beside or below the locked output; with ``like``, the file or folder about
        to be moved there; ``state``: see :func:`reidx.provenance.registration`) in the lock file, so that the
        next writer removes it if this process is killed. A full disk only costs that clean-up."""
        with contextlib.suppress(OSError):
            os.write(self.handle, registration(self.lock.parent, temporary, like, state))
        if state == "made" and temporary.is_dir():
            self.folders.append(temporary)


def new_temporary(beside: Path, held: HeldLock | None, folder: bool = False) -> Path:
    """Create an empty temporary file (or ``folder``) ``.NAME.PID-TAG.tmp`` beside ``beside``, with the mode
    of a plain open (mkdir), its random name claimed in ``held``'s lock file before it exists and recorded
    once made, so a kill at any point leaves nothing a later writer cannot prove reidx's (None: it lies in a
    registered temporary folder, removed as a whole). Write failures are one-line errors naming ``beside``."""
    while True:
        tag = "".join(secrets.choice(TAG_CHARACTERS) for _ in range(8))
        path = beside.parent / f".{beside.name}.{os.getpid()}-{tag}.tmp"
        if path.exists() or path.is_symlink():
            continue
        if held is not None:
            held.register(path, state="claimed")
        try:
            with writing(beside):
                if folder:
                    os.mkdir(path, 0o777)
                else:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
        except FileExistsError:
            if held is not None:
                held.register(path, state="void")
            continue
        if held is not None:
            held.register(path)
        return path


#: The locks this process holds, by their resolved target.
_held: dict[Path, HeldLock] = {}


def real_path(path: Path) -> Path:
    """``path`` absolute with its folders' links resolved; a link at ``path`` itself is followed (a broken
    one is a one-line error)."""
    path = path.expanduser()
    if path.is_symlink():
        if not path.exists():
            raise ReidxError(f"{path} is a broken link", "remove it or write somewhere else")
        return path.resolve()
    return path.parent.resolve() / path.name


def folder_lock(real: Path) -> tuple[HeldLock | None, bool]:
    """The held lock of a folder output that ``real`` lies in (None: none), and whether ``real`` lies in a
    temporary folder registered there (removed as a whole: what is inside needs no registration)."""
    for target, held in _held.items():
        if any(real.is_relative_to(folder) for folder in held.folders):
            return held, True
        if real != target and real.is_relative_to(target):
            return held, False
    return None, False


def write_error(exc: OSError, path: str | os.PathLike) -> ReidxError | None:
    """The one-line error for an OSError that means ``path`` cannot be written (None for any other)."""
    reason = WRITE_ERRORS.get(exc.errno or 0)
    if reason is None:
        return None
    fix = "free some space or write somewhere else" if exc.errno in SPACE_ERRORS else "write somewhere else"
    return ReidxError(f"cannot write {path}: {reason}", fix)


@contextlib.contextmanager
def writing(path: str | os.PathLike, errors: frozenset[int] = frozenset(WRITE_ERRORS)) -> Iterator[None]:
    """Turn an OSError with an errno in ``errors`` raised inside into a ReidxError naming ``path``; so too a
    write that fails without an errno (numpy's ``tofile``, torch's zip writer) while ``path``'s disk is full."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        if code is None and disk_full(Path(path)):
            code = errno.ENOSPC
        if code not in errors or (error := write_error(OSError(code, os.strerror(code)), path)) is None:
            raise
        raise error from None


def disk_full(path: Path) -> bool:
    """Whether the file system ``path`` (or its nearest existing parent) is on has under 1 MiB free."""
    nearest = next((p for p in (path, *path.parents) if p.exists()), None)
    if nearest is None:
        return False
    stats = os.statvfs(nearest)
    return stats.f_bavail * stats.f_frsize < 2**20


def make_parent(path: Path) -> list[Path]:
    """Create the folder ``path`` goes in and return the folders created (outermost first); a file in the
    way or an unwritable place is a one-line error naming ``path``."""
    blocker = _in_the_way(path)
    if blocker is not None:
        raise ReidxError(f"cannot write {path}: {blocker} is not a folder", "choose a path inside a folder")
    created = [p for p in reversed(path.parents) if not p.exists()]
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders of ``folders`` that are empty, innermost first (what a failed write created)."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, kind: str = "file") -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it over ``path`` only on success.

    Inside a folder output whose lock this process holds, that folder's rule governs ``path``. Anywhere
    else ``path`` is a stand-alone ``kind`` file output: it is locked, and an existing file is replaced only
    when reidx recorded writing it as that kind (:mod:`reidx.provenance`; checked again just before the
    rename, which is when the new bytes are recorded); a link is written through to the file it points at.
    Write failures (full disk, read-only folder, a folder at ``path``) are one-line errors naming ``path``.
    """
    path = Path(path)
    check_file_output(path)
    held, inside_temporary = folder_lock(path.parent.resolve() / path.name)
    with contextlib.ExitStack() as stack:
        target = path if held is not None else real_path(path)
        standalone = held is None
        if standalone:
            stack.enter_context(exclusive_lock(target, "file", wait=True))
            held = _held[target.resolve()]
            check_replaceable(target, kind, str(path), "write somewhere else")
        created = make_parent(target)
        try:
            tmp_path = new_temporary(target, None if inside_temporary else held)
            try:
                with writing(path, OUTPUT_ERRORS):
                    yield tmp_path
                if standalone:
                    check_replaceable(target, kind, str(path), "write somewhere else")
                    with writing(path):
                        record_written(target, tmp_path, kind)
                with writing(path):
                    os.replace(tmp_path, target)
            finally:
                tmp_path.unlink(missing_ok=True)
        except BaseException:
            remove_empty(created)
            raise


def write_checksummed(directory: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` atomically as ``directory/STEM-SHA256SUFFIX`` and return that path: the SHA-256 of the
    bytes arrives with them in one rename, so a reader tells a damaged file by its name alone."""
    path = directory / f"{stem}-{hashlib.sha256(data).hexdigest()}{suffix}"
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def check_file_output(path: str | os.PathLike, flag: str | None = None) -> None:
    """Refuse a file output whose path is a folder or lies below a file (the shape checks only: the whole
    rule is :func:`reidx.outputs.check_file_output`)."""
    path, name = Path(path), f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise ReidxError(f"cannot write {name}: it is a folder", "give the path of a file")
    blocker = _in_the_way(path)
    if blocker is not None:
        raise ReidxError(f"cannot write {name}: {blocker} is not a folder", "choose a path inside a folder")


def _in_the_way(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is not a folder (a file, a broken link), else None."""
    nearest = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    return nearest if nearest is not None and not nearest.is_dir() else None


def temporary_dir(path: Path) -> Path:
    """A new empty reidx temporary folder beside ``path`` (whose lock this process holds), registered in
    that lock, with the mode of a plain mkdir."""
    make_parent(path)
    return new_temporary(path, _held[path.resolve()], folder=True)


def replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` in one step (an atomic exchange where the OS has one); the old
    ``target`` is deleted. ``target`` is never missing, except on systems without the exchange. The old
    folder is registered under the name it takes before it is moved there (this process holds the lock)."""
    held = _held[target.resolve()]
    with writing(target):
        if not target.exists():
            os.replace(new, target)
            return
        held.register(new, like=target)  # after the exchange, ``new`` is the old target
        if exchange(new, target):
            shutil.rmtree(new, ignore_errors=True)
        else:
            old = new.with_name(f".{target.name}.{os.getpid()}-old.tmp")
            held.register(old, like=target)
            os.replace(target, old)
            os.replace(new, target)
            shutil.rmtree(old, ignore_errors=True)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


@contextlib.contextmanager
def exclusive_lock(directory: str | os.PathLike, what: str = "output folder", wait: bool = False) -> Iterator[None]:
    """Hold the one-writer lock of the output (folder or file) ``directory`` for the block.

    The lock is ``fcntl.flock`` on ``.NAME.lock`` beside the output, so the kernel releases it when the
    process ends, even by ``kill -9``. Another process holding it is a ReidxError naming that process (a
    second writer refuses, it never races), or with ``wait`` a wait for it; nested use in one process is
    free. The temporaries made for the output are registered in the lock file; on taking the lock, those a
    killed writer registered there are removed (:mod:`reidx.provenance`), nothing else. ``directory`` and the
    parents it had to create are removed again when they are left empty.
    """
    target = Path(directory).expanduser().resolve()
    if target in _held:
        yield
        return
    lock = target.parent / f".{target.name}.lock"
    created = [*make_parent(target), *([] if target.exists() else [target])]
    try:
        handle, previous = _acquire(lock, target, what, wait)
        _held[target] = HeldLock(handle, lock)
        try:
            remove_registered(previous, lock.parent, TEMPORARY)
            with contextlib.suppress(OSError):  # the id is for messages only (a full disk may refuse it)
                os.ftruncate(handle, 0)
                os.write(handle, lock_header(os.getpid()))
            yield
        finally:
            del _held[target]
            lock.unlink(missing_ok=True)  # before unlocking: a waiter that opened this file retries (_acquire)
            os.close(handle)
    finally:
        remove_empty(created)  # the folders made for an output that is not there (empty: nothing is lost)


def _acquire(lock: Path, target: Path, what: str, wait: bool) -> tuple[int, bytes]:
    """An open (appending), flock-ed descriptor of ``lock`` and what the file held (a killed holder's
    registered temporaries)."""
    while True:
        with writing(target):
            handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(os.pread(handle, 64, 0))
            os.close(handle)
            raise ReidxError(
                f"the {what} {target} is being written by another reidx process (pid {holder})",
                "wait until it has finished (or stop it), then run again",
            ) from None
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        opened = os.fstat(handle)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return handle, os.pread(handle, opened.st_size, 0)
        os.close(handle)  # the previous holder removed this file after we opened it: lock the new one
