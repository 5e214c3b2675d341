"""The safe-output rule, the one-writer lock and stale temporaries (reidx.outputs, reidx.io), with real
processes and files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reidx.errors import ReidxError
from reidx.io import atomic_path, exclusive_lock
from reidx.outputs import MARKER_NAME, atomic_dir, check_apart, existing_output, mark_output, read_marker
from reidx.provenance import RECORD_NAME, registration, remove_written, written_kind

HOLD = """
import sys, time
from reidx.io import exclusive_lock
with exclusive_lock(sys.argv[1], "index"):
    print("held", flush=True)
    time.sleep(120)
"""


def hold_lock(directory: Path) -> subprocess.Popen:
    """A real process that holds the lock of ``directory`` until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def tree(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (relative path -> bytes)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_lock_refuses_a_second_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    holder = hold_lock(directory)
    try:
        message = rf"index .*idx is being written by another reidx process \(pid {holder.pid}\)"
        with pytest.raises(ReidxError, match=message), exclusive_lock(directory, "index"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive_lock(directory, "index"):  # the kernel released the killed holder's lock
        with exclusive_lock(directory, "index"):  # nesting in one process is free
            assert (tmp_path / ".idx.lock").read_text().strip() == f"reidx-lock {os.getpid()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the lock file goes with the last holder


def test_a_folder_being_written_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "data"
    holder = hold_lock(out)
    try:
        with pytest.raises(ReidxError, match="being written by another reidx process"):
            with atomic_dir(out, "dataset"):
                raise AssertionError("must not be reached")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


KILLED_MIDWAY = """
import sys, time
from pathlib import Path
from reidx.io import atomic_path, exclusive_lock
from reidx.outputs import atomic_dir
out = Path(sys.argv[1])
with atomic_dir(out, "index", overwrite=True) as tmp:  # a temporary folder beside out
    (tmp / "index.faiss").write_bytes(b"half an index")
    with exclusive_lock(out, "index"), atomic_path(out / ".partial" / "chunk.npy") as chunk:  # one below it
        chunk.write_bytes(b"half a chunk")
        with atomic_path(out.parent / "report.md", "report") as report:  # and a file output's
            report.write_text("half a report")
            print("ready", flush=True)
            time.sleep(120)
"""


def kill_midway(out: Path) -> list[Path]:
    """Kill -9 a real writer of ``out`` (and of ``report.md`` beside it) while its temporaries exist; return them."""
    process = subprocess.Popen([sys.executable, "-c", KILLED_MIDWAY, str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(p for p in out.parent.rglob(f"*.{process.pid}-*.tmp"))
    assert len(left) == 3, left
    return left


def user_files_named_like_temporaries(out: Path) -> dict[Path, bytes]:
    """A user's files and folders below and beside ``out`` whose names look like stale reidx temporaries."""
    dead = dead_pid()
    files = {
        out.parent / f".{out.name}.{dead}-abcd_123.tmp": b"mine, beside",
        out.parent / f".{out.name}.{dead}-old.tmp": b"mine too",
        out.parent / f".report.md.{dead}-deadbeef.tmp": b"my notes",
        out / ".partial" / f".chunk.npy.{dead}-k2j4l5m6.tmp": b"mine, below",
        out / f".foo.{dead}-deadbeef.tmp": b"mine, in the output",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    folder = out.parent / f".{out.name}.{dead}-zzzzzzzz.tmp"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"my photo")
    files[folder / "photo.jpg"] = b"my photo"
    return files


def test_a_killed_writers_temporaries_are_removed_and_a_users_look_alikes_never(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    killed = kill_midway(out)
    mine = user_files_named_like_temporaries(out)
    with pytest.raises(ReidxError, match=r"not written by reidx \(e.g. "):  # refused: the user's files below --out
        with atomic_dir(out, "index", overwrite=True):
            raise AssertionError("must not be reached")
    assert {path: path.read_bytes() for path in mine} == mine  # nothing of the user's deleted
    assert not any(path.exists() for path in killed if path.name.startswith((".idx.", ".chunk")))
    with atomic_path(tmp_path / "report.md", "report") as tmp:  # the next writer of report.md removes its own
        tmp.write_text("done")
    assert not any(path.exists() for path in killed)
    for path in [path for path in mine if path.is_relative_to(out)]:  # the user moves theirs out of idx
        path.rename(tmp_path / path.name)
        mine[tmp_path / path.name] = mine.pop(path)
    with atomic_dir(out, "index", overwrite=True) as tmp:  # accepted: replaced, the look-alikes beside it kept
        (tmp / "x").write_text("1")
    assert {path: path.read_bytes() for path in mine} == mine
    assert sorted(p.name for p in tmp_path.glob(".*.lock")) == []


def test_atomic_path_names_a_folder_and_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(ReidxError, match="folder.*is a folder"):
        with atomic_path(tmp_path / "folder"):
            pass
    (tmp_path / "report.md").write_text("x")
    with pytest.raises(ReidxError, match="report.md is not a folder"):
        with atomic_path(tmp_path / "report.md" / "x.png"):
            pass


def test_existing_output_rule(tmp_path: Path) -> None:
    assert existing_output(tmp_path / "absent", "index") is False
    (tmp_path / "empty").mkdir()
    assert existing_output(tmp_path / "empty", "index") is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReidxError, match="is a file, not a folder"):
        existing_output(tmp_path / "file", "index")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(b"jpeg")
    with pytest.raises(ReidxError, match=r"exists and was not written by reidx \(e.g. me.jpg\)") as error:
        existing_output(photos, "index")
    assert "--overwrite" not in error.value.line()
    with atomic_dir(tmp_path / "ds", "dataset") as tmp:
        (tmp / "lr").mkdir()
        (tmp / "lr" / "a.png").write_bytes(b"png")
    assert read_marker(tmp_path / "ds")["files"] == ["lr/a.png"]
    assert existing_output(tmp_path / "ds", "dataset") is True
    with pytest.raises(ReidxError, match="holds a prepared dataset, not an index") as error:
        existing_output(tmp_path / "ds", "index")
    assert "--overwrite" not in error.value.line()
    (tmp_path / "ds" / "lr" / "mine.jpg").write_bytes(b"user")
    with pytest.raises(ReidxError, match=r"holds files reidx did not write \(e.g. lr/mine.jpg\)"):
        existing_output(tmp_path / "ds", "dataset")
    (tmp_path / "ds" / MARKER_NAME).write_text("{damaged")
    with pytest.raises(ReidxError, match="not written by reidx"):
        existing_output(tmp_path / "ds", "dataset")
    only_state = tmp_path / "interrupted"
    (only_state / ".partial").mkdir(parents=True)
    (only_state / ".partial" / "chunk-0000000000-0000000004.npy").write_bytes(b"x")
    assert existing_output(only_state, "index") is False  # an interrupted first embed, to resume


def test_atomic_dir_replaces_in_one_step_and_keeps_the_old_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with atomic_dir(out, "dataset") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(ReidxError, match="already holds a prepared dataset.*--overwrite"):
        with atomic_dir(out, "dataset"):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, "dataset", overwrite=True) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("killed halfway")
    assert tree(out)["a.txt"] == b"old"
    with pytest.raises(ReidxError, match="did not write"):
        with atomic_dir(out, "dataset", overwrite=True) as tmp:
            (out / "added-meanwhile.jpg").write_bytes(b"user")  # the rule is checked again at the end
    assert sorted(tree(out)) == [MARKER_NAME, "a.txt", "added-meanwhile.jpg"]
    (out / "added-meanwhile.jpg").unlink()
    with atomic_dir(out, "dataset", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(tree(out)) == [MARKER_NAME, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert json.loads((out / MARKER_NAME).read_text())["kind"] == "dataset"


def test_atomic_dir_through_a_link_replaces_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    with atomic_dir(real, "index") as tmp:
        (tmp / "x").write_text("1")
    (tmp_path / "link").symlink_to(real)
    with atomic_dir(tmp_path / "link", "index", overwrite=True) as tmp:
        (tmp / "x").write_text("2")
    assert (tmp_path / "link").is_symlink() and (real / "x").read_text() == "2"


def test_mark_output_extends_the_list(tmp_path: Path) -> None:
    mark_output(tmp_path, "recovered", ["a.png"])
    mark_output(tmp_path, "recovered", ["b.png"])
    assert read_marker(tmp_path)["files"] == ["a.png", "b.png"]


def test_check_apart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    check_apart(tmp_path / "out", [data])
    for out in (data, tmp_path):
        with pytest.raises(ReidxError, match="is or contains the input"):
            check_apart(out, [data / "images"])
    with pytest.raises(ReidxError, match="lies inside the input"):
        check_apart(data / "images" / "out", [data])
    check_apart(data / "images" / "out", [data], inside=False)
    (tmp_path / "alias").symlink_to(data)
    with pytest.raises(ReidxError, match="is or contains the input"):
        check_apart(tmp_path / "alias", [data / "images"])  # the same folder under another name
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "img.png").symlink_to(data / "images")
    with pytest.raises(ReidxError, match="is or contains the input"):
        check_apart(data, [tmp_path / "elsewhere" / "img.png"])


def test_atomic_dir_without_an_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Systems without renameat2 (macOS, some file systems) replace with two renames, leaving nothing."""
    monkeypatch.setattr("reidx.io.exchange", lambda first, second: False)
    out = tmp_path / "idx"
    for text in ("1", "2"):
        with atomic_dir(out, "index", overwrite=True) as tmp:
            (tmp / "x").write_text(text)
    assert (out / "x").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_a_file_is_replaced_only_when_its_bytes_are_a_recorded_write_of_its_kind(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    for text in ("first", "second"):  # reidx rewrites its own file
        with atomic_path(report, "report") as tmp:
            tmp.write_text(text)
    assert written_kind(report) == "report" and report.read_text() == "second"
    with pytest.raises(ReidxError, match=r"report.md holds a report reidx wrote, not an image"):
        with atomic_path(report, "image"):
            raise AssertionError("must not be reached")
    with open(tmp_path / RECORD_NAME, "a") as record:
        record.write('{"name": "report.md", "kind": "ima')  # a writer killed mid-record: ignored
    (tmp_path / "link.md").symlink_to(report)
    with atomic_path(tmp_path / "link.md", "report") as tmp:  # through a link, to the file it points at
        tmp.write_text("third")
    assert (tmp_path / "link.md").is_symlink() and report.read_text() == "third"
    report.write_text("edited by the user")  # the user's now
    for path in (report, tmp_path / "link.md"):
        with pytest.raises(ReidxError, match="exists and was not written by reidx"):
            with atomic_path(path, "report"):
                raise AssertionError("must not be reached")
    assert not remove_written(report, "report") and report.read_text() == "edited by the user"
    (tmp_path / "copy.md").write_bytes(b"second")  # the bytes of a recorded write, under another name
    assert written_kind(tmp_path / "copy.md") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_NAME, "copy.md", "link.md", "report.md"]


def test_a_temporary_claimed_but_not_yet_recorded_is_removed_and_a_void_claim_never(tmp_path: Path) -> None:
    """A writer killed between claiming a temporary's random name and recording the file it made."""
    dead = dead_pid()
    claimed, taken = tmp_path / f".run.{dead}-k3j_x9a2.tmp", tmp_path / f".run.{dead}-zzzz_999.tmp"
    claimed.write_bytes(b"")
    taken.write_bytes(b"the user's, made before the claim")
    lines = [registration(tmp_path, claimed, state="claimed"), registration(tmp_path, taken, state="claimed")]
    lines.append(registration(tmp_path, taken, state="void"))  # the name was taken: the writer chose another
    (tmp_path / ".run.lock").write_bytes(f"reidx-lock {dead}\n".encode() + b"".join(lines))
    with exclusive_lock(tmp_path / "run", "training run"):
        pass
    assert not claimed.exists() and taken.read_bytes() == b"the user's, made before the claim"
