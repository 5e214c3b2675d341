"""The safe-output rule: reidx replaces or adds to an output only if reidx wrote it, as the same kind of output.

Folders: every output folder reidx makes holds a marker, ``.reidx-output.json``, naming its kind
(:data:`KINDS`), the reidx version and the files reidx wrote there. A folder may be replaced or added to only
when it is absent, empty, or marked with the same kind and holding nothing but the files its marker lists
(plus that kind's own resume state). Files: a file output (``--out`` of report and export, ``--montage``,
``--grid``, the plots and caches) may be created, or replace a file reidx recorded writing there as the same
kind (:mod:`reidx.provenance`: the proof, and how temporaries are proven too); a link is followed to its file,
which must pass the same test. Anything else (a user's file or folder, another kind of output) is refused,
and that refusal never suggests ``--overwrite``.

``--overwrite``: the outputs that are products, costly to make again (a prepared dataset, an index, an ONNX
export), are replaced only with ``--overwrite``; those a command makes again from its inputs on every run
(reports, plots, montages, grids, recovered images, caches, a training run's own files) are rewritten without
it. Neither ever replaces what reidx did not write. Writers hold :func:`reidx.io.exclusive_lock` on their
output, and an output never is, contains or lies inside one of the command's inputs (:func:`check_apart`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from reidx import __version__
from reidx.errors import ReidxError
from reidx.io import (
    OUTPUT_ERRORS,
    atomic_path,
    exclusive_lock,
    real_path,
    replace_dir,
    temporary_dir,
    writing,
)
from reidx.io import check_file_output as check_file_shape
from reidx.provenance import check_replaceable, file_label

MARKER_NAME = ".reidx-output.json"
FORMAT = "reidx-output"
VERSION = 1
#: Kind -> (what it is called in messages, the folders of resume state it keeps beside its listed files).
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "index": ("index", (".partial",)),
    "dataset": ("prepared dataset", ()),
    "recovered": ("folder of recovered images", ()),
    "run": ("training run", ()),
}


def label(kind: str) -> str:
    """``"an index"``, ``"a prepared dataset"``, ...: the kind in a sentence."""
    name = KINDS[kind][0]
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def read_marker(directory: str | os.PathLike) -> dict | None:
    """The marker of ``directory`` (keys format, version, kind, reidx_version, files), None when it has
    no readable one."""
    try:
        marker = json.loads((Path(directory) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    valid = isinstance(marker, dict) and marker.get("format") == FORMAT and marker.get("kind") in KINDS
    return marker if valid and isinstance(marker.get("files"), list) else None


def mark_output(directory: str | os.PathLike, kind: str, files: Iterable[str] = ()) -> None:
    """Write (or extend) the marker of ``directory``: a ``kind`` output holding ``files`` (paths relative to
    it, POSIX style) besides those its marker already lists."""
    directory = Path(directory)
    marker = read_marker(directory)
    listed = set(marker["files"]) if marker is not None and marker["kind"] == kind else set()
    record = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "reidx_version": __version__,
        "files": sorted(listed | set(files)),
    }
    with atomic_path(directory / MARKER_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def files_below(directory: Path) -> list[str]:
    """Every file, link and empty folder below ``directory`` (relative POSIX paths), except the marker."""
    found = []
    for top, dirs, files in os.walk(directory):
        base = Path(top).relative_to(directory)
        links = [name for name in dirs if Path(top, name).is_symlink()]
        found += [(base / name).as_posix() for name in [*files, *links]]
        if not dirs and not files and top != str(directory):
            found.append(base.as_posix() + "/")
    return sorted(name for name in found if name != MARKER_NAME)


def foreign_files(directory: Path, kind: str, marker: dict | None) -> list[str]:
    """The files below ``directory`` that reidx did not write there as a ``kind`` output: neither listed in
    its marker nor in the folders of resume state reidx keeps there. A name like a temporary proves nothing
    (a killed writer's registered ones were removed when its lock was taken)."""
    listed = set(marker["files"]) if marker is not None else set()
    state = KINDS[kind][1]
    return [name for name in files_below(directory) if name not in listed and name.split("/")[0] not in state]


def existing_output(path: str | os.PathLike, kind: str, flag: str = "--out") -> bool:
    """Whether ``path`` holds a ``kind`` output of reidx's (False: absent, empty, or only resume state).

    Anything reidx may not replace or add to is a one-line ReidxError that never suggests ``--overwrite``.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise ReidxError(f"{flag} {path} is a broken link", f"remove it or choose another {flag}")
        return False
    if not path.is_dir():
        raise ReidxError(f"{flag} {path} is a file, not a folder", f"choose a folder for {flag}")
    marker = read_marker(path)
    if marker is not None and marker["kind"] != kind:
        raise ReidxError(
            f"{path} holds {label(marker['kind'])}, not {label(kind)}", f"choose another {flag} (a new or empty folder)"
        )
    foreign = foreign_files(path, kind, marker)
    if foreign:
        what = "holds files reidx did not write" if marker is not None else "exists and was not written by reidx"
        raise ReidxError(
            f"{path} {what} (e.g. {foreign[0]}); reidx never replaces them",
            f"choose another {flag} (a new or empty folder)",
        )
    return marker is not None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes the ``kind`` output ``path`` (marked with the
    files it holds) only on success, in one step. On failure nothing is left behind.

    An existing output is replaced only with ``overwrite``, and only under the safe-output rule; the rule
    is checked again just before the replacement. The folder's lock is held throughout.
    """
    path = Path(path)
    with exclusive_lock(path, KINDS[kind][0]):
        if existing_output(path, kind) and not overwrite:
            raise ReidxError(
                f"{path} already holds {label(kind)}", "pass --overwrite to replace it, or choose another --out"
            )
        target = path.expanduser().resolve()
        tmp = temporary_dir(target)
        try:
            with writing(path, OUTPUT_ERRORS):
                yield tmp
                mark_output(tmp, kind, files_below(tmp))
            existing_output(path, kind)
            replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _forms(path: Path) -> set[Path]:
    """``path`` made absolute as written and with every link resolved."""
    path = path.expanduser()
    return {Path(os.path.abspath(path)), path.resolve()}


def check_apart(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    what: str = "input",
    inside: bool = True,
    flag: str = "--out",
) -> None:
    """Refuse an output that equals or contains any input (and, with ``inside``, one that lies inside an
    input folder), comparing the paths as written and with every link resolved."""
    outs = _forms(Path(out))
    for given in inputs:
        for source in _forms(Path(given)):
            for target in outs:
                if source.is_relative_to(target):
                    raise ReidxError(
                        f"{flag} {out} is or contains the {what} {given}: writing it could destroy it",
                        f"choose an {flag} outside the {what}",
                    )
                if inside and target.is_relative_to(source):
                    raise ReidxError(f"{flag} {out} lies inside the {what} {given}", f"choose an {flag} outside it")


def check_files_folder(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, a folder that file outputs go into (each under the file rule) when a file or a
    broken link is at its path or in its way, or it is, holds or lies inside one of the command's ``inputs``."""
    path = Path(path)
    if path.exists() and not path.is_dir() or path.is_symlink() and not path.exists():
        raise ReidxError(f"{flag} {path} is not a folder", f"choose a folder for {flag}")
    check_file_shape(path / "file", flag)
    check_apart(path, inputs, flag=flag)


def check_file_output(
    path: str | os.PathLike,
    flag: str,
    kind: str,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool | None = None,
) -> None:
    """Refuse, before any work, a ``kind`` file output (:data:`reidx.provenance.FILE_KINDS`) that reidx may
    not write: a folder, a path below a file, one that is or lies inside one of the command's ``inputs``, an
    existing file (or a link's file) reidx cannot prove it wrote as that kind and, for a product the command
    replaces only on request, an existing one without ``overwrite`` (None: the command rewrites its file)."""
    path = Path(path)
    check_file_shape(path, flag)
    check_apart(path, inputs, flag=flag)
    if path.is_symlink() and not path.exists():
        raise ReidxError(f"{flag} {path} is a broken link", f"remove it or choose another {flag}")
    real = real_path(path)
    shown = f"{flag} {path}" + (f" (a link to {real})" if path.is_symlink() else "")
    if check_replaceable(real, kind, shown, f"choose another {flag}") and overwrite is False:
        raise ReidxError(f"{shown} already holds {file_label(kind)} reidx wrote", "pass --overwrite to replace it")
