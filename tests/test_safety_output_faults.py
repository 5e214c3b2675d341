"""Output faults on every command that writes: a file where a folder goes (and the reverse), a read-only
folder, a full disk, a file size limit. Each is one line naming the path, exit 1, no traceback, and
nothing left behind."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reidx.data.prepare import prepare_dataset
from reidx.models.loading import load_model
from reidx.retrieval import build_index, images_table
from reidx.retrieval.requests import EmbedJob


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A CAD-Net checkpoint, a prepared synthetic dataset and its index."""
    root = tmp_path_factory.mktemp("faults")
    shutil.copyfile(tiny_checkpoint, root / "cadnet.pt")
    prepare_dataset("synthetic", None, root / "ds", rates=(2,), ids=12, cameras=2, images_per_camera=2, workers=1)
    build_index(
        load_model(root / "cadnet.pt"), images_table([root / "ds" / "hr"]), root / "idx", job=EmbedJob(workers=0)
    )
    return root


def commands(ws: Path, out: Path) -> dict[str, list[str]]:
    """Every command that writes, each writing below ``out``."""
    run = ["--workers", "0"]
    return {
        "prepare": ["prepare", "--dataset", "synthetic", "--ids", "6", "--cameras", "2", "--out", str(out / "ds")],
        "train": ["train", "--dataset", str(ws / "ds"), "--out", str(out / "run"), "--arch", "resnet18",
                  "--no-pretrained", "--input-size", "64x32", "--epochs", "0", "--val-ids", "0", "--batch-ids", "2",
                  "--batch-instances", "2", *run],
        "recover": ["recover", str(ws / "ds" / "lr"), "--checkpoint", str(ws / "cadnet.pt"), "--out",
                    str(out / "rec"), *run],
        "embed": ["embed", "--checkpoint", str(ws / "cadnet.pt"), "--dataset", str(ws / "ds"), "--out",
                  str(out / "idx"), *run],
        "report": ["report", "--checkpoint", str(ws / "cadnet.pt"), "--dataset", str(ws / "ds"), "--out",
                   str(out / "r.md"), *run],
        "search --montage": ["search", str(ws / "ds" / "lr"), "--gallery", str(ws / "idx"), "--montage",
                             str(out / "m.png"), *run],
        "recover --grid": ["recover", str(ws / "ds" / "lr"), "--checkpoint", str(ws / "cadnet.pt"), "--out",
                           str(out.parent / "rec-ok"), "--grid", str(out / "grid.png"), *run],
    }  # fmt: skip


COMMANDS = ["prepare", "train", "recover", "embed", "report", "search --montage", "recover --grid"]


def one_line(result: tuple[int, str, str], *needles: str) -> str:
    code, _, err = result
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs at ``folder`` (needs root); False where that is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody (root included) can write: a read-only tmpfs as root, mode 0555 otherwise."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not mount_tmpfs(folder, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a full disk (a small tmpfs filled up; needs root)."""
    folder = tmp_path / "full"
    if not mount_tmpfs(folder, "size=256k"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        with open(folder / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_folder(run_cli, ws: Path, readonly_dir: Path, command: str) -> None:
    one_line(run_cli("--device", "cpu", *commands(ws, readonly_dir)[command]), str(readonly_dir))
    assert listing(readonly_dir) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk(run_cli, ws: Path, full_dir: Path, command: str) -> None:
    one_line(run_cli("--device", "cpu", *commands(ws, full_dir)[command]), "no space left", str(full_dir))
    assert listing(full_dir) == ["filler"]


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


@pytest.mark.parametrize("command", ["prepare", "train", "recover", "embed", "report"])
def test_a_file_size_limit_in_a_real_process(ws: Path, tmp_path: Path, command: str) -> None:
    """Works without root: writes over RLIMIT_FSIZE fail with EFBIG (Python ignores SIGXFSZ)."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "reidx", "--device", "cpu", *commands(ws, out)[command]],
                          capture_output=True, text=True, timeout=300, env=env, preexec_fn=limit_file_size)  # fmt: skip
    one_line((done.returncode, done.stdout, done.stderr), "file size limit", str(out))
    assert listing(out) == []


@pytest.mark.parametrize("command", ["prepare", "train", "recover", "embed"])
def test_a_file_where_a_folder_goes(run_cli, ws: Path, tmp_path: Path, command: str) -> None:
    args = commands(ws, tmp_path)[command]
    target = Path(args[args.index("--out") + 1])
    target.write_text("the user's notes")
    line = one_line(run_cli("--device", "cpu", *args), str(target.name))
    assert "--overwrite" not in line and "--resume" not in line
    assert target.read_text() == "the user's notes" and listing(tmp_path) == [target.name]


@pytest.mark.parametrize("command", ["report", "search --montage", "recover --grid"])
def test_a_folder_where_a_file_goes(run_cli, ws: Path, tmp_path: Path, command: str) -> None:
    args = commands(ws, tmp_path / "x")[command]
    target = Path(args[-3])
    target.mkdir(parents=True)
    one_line(run_cli("--device", "cpu", *args), "is a folder", target.name)
    assert listing(tmp_path) == ["x", f"x/{target.name}"]  # nothing written, not even the other outputs


@pytest.mark.parametrize("command", ["report", "embed", "recover"])
def test_a_file_in_the_way_of_the_parent(run_cli, ws: Path, tmp_path: Path, command: str) -> None:
    (tmp_path / "x").write_text("a file")
    one_line(run_cli("--device", "cpu", *commands(ws, tmp_path / "x")[command]), "is not a folder")
    assert listing(tmp_path) == ["x"]
