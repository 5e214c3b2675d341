"""File helpers: atomic writes, the one-writer lock of an output folder, content hashes; ``load_image`` is
re-exported from :mod:`reidx.images`.

Every temporary reidx writes is named ``.NAME.PID-TAG.tmp`` beside (or inside) what it becomes, so one
whose process is gone (killed) is recognisably stale: the next writer of that output removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from reidx.errors import ReidxError
from reidx.images import load_image  # noqa: F401 - re-exported: reidx.io.load_image is the documented name

#: A temporary file or folder reidx creates: ``.NAME.PID-TAG.tmp`` (TAG: tempfile's 8 characters, or "old").
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?:[a-z0-9_]{8}|old)\.tmp$")
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
_held_locks: set[Path] = set()


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
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it over ``path`` only on success.

    Write failures (full disk, read-only folder, a folder at ``path``) are one-line errors naming ``path``.
    """
    path = Path(path)
    check_file_output(path)
    created = make_parent(path)
    try:
        remove_stale_temporaries(path.parent, of=path.name)
        with writing(path):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result should look like a plain open()
            with writing(path, OUTPUT_ERRORS):
                yield tmp_path
            with writing(path):
                os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)
    except BaseException:
        remove_empty(created)
        raise


def check_file_output(path: str | os.PathLike, flag: str | None = None) -> None:
    """Refuse, before any work, a file output whose path is a folder or lies below a file."""
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
    """A new empty reidx temporary folder beside ``path``, with the mode of a plain mkdir."""
    make_parent(path)
    with writing(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    return tmp


def replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target`` in one step (an atomic exchange where the OS has one); the old
    ``target`` is deleted. ``target`` is never missing, except on systems without the exchange."""
    with writing(target):
        if not target.exists():
            os.replace(new, target)
        elif exchange(new, target):
            shutil.rmtree(new, ignore_errors=True)
        else:
            old = new.with_name(f".{target.name}.{os.getpid()}-old.tmp")
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def stale(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a reidx temporary (of the file or folder named ``of``) whose process is gone."""
    match = TEMPORARY.match(name)
    return bool(match) and of in (None, match["name"]) and not process_alive(int(match["pid"]))


def remove_stale_temporaries(folder: Path, of: str | None = None, recursive: bool = False) -> None:
    """Delete the stale reidx temporaries in ``folder`` (only those of ``of``; also in subfolders when
    ``recursive``). Nothing else is touched."""
    for top, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if stale(name, of):
                path = Path(top, name)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        dirs[:] = [name for name in dirs if recursive and Path(top, name).is_dir()]


@contextlib.contextmanager
def exclusive_lock(directory: str | os.PathLike, what: str = "output folder") -> Iterator[None]:
    """Hold the one-writer lock of the output folder ``directory`` for the block.

    The lock is ``fcntl.flock`` on ``.NAME.lock`` beside the folder, so the kernel releases it when the
    process ends, even by ``kill -9``. Another process holding it is a ReidxError naming that process (a
    second writer refuses, it never races); nested use in one process is free. On taking it, the stale
    reidx temporaries beside and inside ``directory`` are removed; ``directory`` and the parents it had to
    create are removed again when they are left empty.
    """
    target = Path(directory).expanduser().resolve()
    if target in _held_locks:
        yield
        return
    lock = target.parent / f".{target.name}.lock"
    created = [*make_parent(target), *([] if target.exists() else [target])]
    try:
        handle = _acquire(lock, target, what)
        _held_locks.add(target)
        try:
            remove_stale_temporaries(target.parent, of=target.name)
            remove_stale_temporaries(target, recursive=True)
            yield
        finally:
            _held_locks.discard(target)
            lock.unlink(missing_ok=True)  # before unlocking: a waiter that opened this file retries (_acquire)
            os.close(handle)
    finally:
        remove_empty(created)  # the folders made for an output that is not there (empty: nothing is lost)


def _acquire(lock: Path, target: Path, what: str) -> int:
    """An open, flock-ed descriptor of ``lock`` holding this process id."""
    while True:
        with writing(target):
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
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
            break
        os.close(handle)  # the previous holder removed this file after we opened it: lock the new one
    with contextlib.suppress(OSError):  # the id is for messages only (a full disk may refuse it)
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
    return handle


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
