"""The tracebacks that remained and the messages that misled (issue 21, classes 6 and 7), each built through
the real CLI: one line on stderr naming the file and the fix, exit 1, no traceback, nothing half-written;
user text (file names, config values) printed literally."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from reidx.data.prepare import prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
#: Root reads any file whatever its mode; without these capabilities it obeys the owner's bits like anyone.
NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A CAD-Net checkpoint (resnet18, 64x32) and a prepared synthetic dataset (6 ids, 2 cameras)."""
    root = tmp_path_factory.mktemp("messages")
    shutil.copyfile(tiny_checkpoint, root / "cadnet.pt")
    prepare_dataset("synthetic", None, root / "ds", rates=(2,), ids=6, cameras=2, images_per_camera=2, workers=1)
    return root


def one_line(code: int, err: str, *needles: str) -> str:
    """The single ``error:`` line of a refused command, checked to hold every needle."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


def environment() -> dict[str, str]:
    """This environment, reidx importable, stdout buffered as for a user (Python's unbuffered stdout drops
    the rest of a partial write without an error)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONUNBUFFERED", None)
    return env


def reidx(*args: str, prefix: list[str] | None = None, **options) -> subprocess.CompletedProcess:
    """``reidx --device cpu ARGS`` as a real process (``prefix``: a command it runs under)."""
    env = environment()
    command = [*(prefix or []), sys.executable, "-m", "reidx", "--device", "cpu", *map(str, args)]
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | options
    return subprocess.run(command, text=True, timeout=300, env=env, **streams)


@pytest.fixture
def unreadable() -> Iterator[list[str]]:
    """The prefix under which a chmod 000 file cannot be read, root included; skips where none exists."""
    if os.geteuid() != 0:
        yield []
    elif shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
    else:
        yield NO_OVERRIDE


@pytest.mark.slow
@pytest.mark.parametrize("command", ["prepare", "embed", "recover"])
def test_an_unreadable_image_in_a_folder_is_one_line(
    ws: Path, tmp_path: Path, viper_tree, unreadable: list[str], command: str
) -> None:
    images = viper_tree(tmp_path / "viper", ids=4)
    bad = images / "cam_a" / "002_0.bmp"
    bad.chmod(0o000)
    out = tmp_path / "out"
    args = {
        "prepare": ["prepare", "--dataset", "viper", "--root", images, "--test-ids", "2", "--out", out],
        "embed": ["embed", "--checkpoint", ws / "cadnet.pt", images, "--out", out, "--workers", "0"],
        "recover": ["recover", images / "cam_a", "--checkpoint", ws / "cadnet.pt", "--out", out, "--workers", "0"],
    }[command]
    try:
        done = reidx(*args, prefix=unreadable)
    finally:
        bad.chmod(0o644)
    one_line(done.returncode, done.stderr, str(bad), "permission denied", "chmod")
    # embed keeps its resume state (.partial/) so that the re-run after the fix resumes; nothing else is left
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("out/*"))
    assert left == (["out/.partial"] if command == "embed" else [])
    assert sorted(os.listdir(tmp_path)) == (["out", "viper"] if command == "embed" else ["viper"])


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small tmpfs (root)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
        pytest.skip("cannot mount a tmpfs here")


@pytest.mark.slow
@pytest.mark.parametrize(("command", "size"), [("train", "1m"), ("embed", "48k")])
def test_a_disk_that_fills_during_a_write_is_one_line(ws: Path, tmp_path: Path, command: str, size: str) -> None:
    """The disk has room to start but not for the checkpoint (torch.save raises RuntimeError) or the first
    embedding chunks (np.save raises an OSError without an errno); real processes, so nothing stays open on
    the disk when it is unmounted."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, size)
    try:
        out = disk / "out"
        args = {
            "train": ["train", "--dataset", ws / "ds", "--out", out, "--arch", "resnet18", "--no-pretrained",
                      "--input-size", "64x32", "--epochs", "0", "--val-ids", "0", "--workers", "0", "--batch-ids", "2",
                      "--batch-instances", "2"],
            "embed": ["embed", "--checkpoint", ws / "cadnet.pt", "--dataset", ws / "ds", "--out", out,
                      "--workers", "0"],
        }[command]  # fmt: skip
        done = reidx(*args)
        one_line(done.returncode, done.stderr, "no space left", str(out))
        # whole files only: no checkpoint, no index, no temporary; embed's finished chunks are its resume state
        left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        assert not [name for name in left if name.endswith((".pt", ".tmp", ".faiss", ".parquet"))], left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


@pytest.mark.slow
def test_search_json_to_a_full_file_or_a_closed_pipe(tiny_gallery: Path, tmp_path: Path) -> None:
    args = ["search", tiny_gallery / "queries", "--gallery", tiny_gallery / "idx", "--json", "--workers", "0"]
    with open(tmp_path / "results.json", "w") as stdout:  # over RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC
        done = reidx(*args, stdout=stdout, stderr=subprocess.PIPE, preexec_fn=limit_file_size)
    one_line(done.returncode, done.stderr, "cannot write the output to stdout", "file size limit")
    command = [sys.executable, "-m", "reidx", "--device", "cpu", *map(str, args)]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    reader.stdout.close()  # the reader went away before the results came
    err = reader.stderr.read()
    assert reader.wait(timeout=300) == 1 and "Traceback" not in err and "Exception ignored" not in err, err


def test_a_checkpoint_whose_model_cannot_be_built(run_cli, ws: Path, tmp_path: Path) -> None:
    state = torch.load(ws / "cadnet.pt", weights_only=True)
    state["model_config"]["num_classes"] = -3
    torch.save(state, tmp_path / "hostile.pt")
    code, _, err = run_cli("--device", "cpu", "embed", "--checkpoint", tmp_path / "hostile.pt", "--dataset",
                           ws / "ds", "--out", tmp_path / "idx", "--workers", "0")  # fmt: skip
    one_line(code, err, "hostile.pt describes a model this reidx cannot build", "negative dimension")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("[1, 2]", ["holds a JSON list, not a table of training options"]),
        ("folder", ["is a folder", "config.json inside a run folder"]),
        ('{"epochs": 1e999}', ["epochs = ", "not an integer"]),
        ('{"lr": NaN}', ["lr = ", "not a finite number"]),
    ],
)
def test_bad_config_files_are_one_line(run_cli, ws: Path, tmp_path: Path, content: str, needles: list[str]) -> None:
    config = tmp_path / "options.json"
    if content == "folder":
        config.mkdir()
    else:
        config.write_text(content)
    code, _, err = run_cli("train", "--config", config, "--dataset", ws / "ds", "--out", tmp_path / "run")
    one_line(code, err, str(config), *needles)
    assert not (tmp_path / "run").exists()


def test_a_non_finite_training_flag_is_one_line(run_cli, ws: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("train", "--dataset", ws / "ds", "--out", tmp_path / "run", "--lr", "inf")
    one_line(code, err, "lr = ", "not a finite number")


def test_report_beside_a_read_only_checkpoint_warns_once_and_reports(run_cli, ws: Path, tmp_path: Path) -> None:
    """The evaluation cache is an optimisation: an unwritable run folder costs the cache, not the report."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        shutil.copy(ws / "cadnet.pt", folder / "cadnet.pt")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        shutil.copy(ws / "cadnet.pt", folder / "cadnet.pt")
        folder.chmod(0o555)
    try:
        code, out, err = run_cli("--device", "cpu", "report", "--checkpoint", folder / "cadnet.pt", "--dataset",
                                 ws / "ds", "--modes", "fused", "--workers", "0")  # fmt: skip
        assert code == 0 and "Rank-1" in out and "Traceback" not in err, err
        warnings = [line for line in err.splitlines() if line.startswith("warning: results not cached")]
        assert len(warnings) == 1 and str(folder) in warnings[0], err
        assert sorted(p.name for p in folder.iterdir()) == ["cadnet.pt"]
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)


@pytest.mark.slow
def test_a_torchrun_rank_refused_on_resume_leaves_one_line(ws: Path, tmp_path: Path) -> None:
    """Rank 0 finds the run locked by another writer; rank 1 must not die with a traceback waiting for it."""
    run = tmp_path / "run"
    shutil.copytree(ws / "ds", tmp_path / "ds")
    base = ["--dataset", tmp_path / "ds", "--arch", "resnet18", "--no-pretrained", "--input-size", "64x32",
            "--val-ids", "0", "--workers", "0", "--batch-ids", "2", "--batch-instances", "2"]  # fmt: skip
    assert reidx("train", "--out", run, "--epochs", "0", *base).returncode == 0
    hold = "import sys, time\nfrom reidx.io import exclusive_lock\nwith exclusive_lock(sys.argv[1]):\n"
    hold += "    print('held', flush=True)\n    time.sleep(300)\n"
    env = environment()
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                   "reidx", "--device", "cpu", "train", "--out", str(run), "--resume", "--epochs", "1"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "being written by another reidx process" in lines[0], done.stderr
    assert "[rank1]" not in done.stderr and "Connection closed by peer" not in done.stderr, done.stderr


def test_user_text_is_printed_literally(run_cli, ws: Path, tiny_gallery: Path, tmp_path: Path) -> None:
    """Rich markup in a file name or a message ([red]..., [height, width]) is shown as written."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next((tiny_gallery / "gallery").glob("*.png")), images / "[red]secret.png")
    (images / "[bold]broken.png").write_bytes(b"not an image")
    code, _, err = run_cli("--device", "cpu", "embed", "--checkpoint", tiny_gallery / "model.pt", images,
                           "--out", tmp_path / "idx", "--workers", "0")  # fmt: skip
    one_line(code, err, "[bold]broken.png")
    (images / "[bold]broken.png").unlink()
    code, _, err = run_cli("--device", "cpu", "embed", "--checkpoint", tiny_gallery / "model.pt", images,
                           "--out", tmp_path / "idx", "--workers", "0")  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("--device", "cpu", "search", images, "--gallery", tmp_path / "idx", "--workers", "0")
    assert code == 0 and "[red]secret.png" in "".join(out.split()), out
    config = tmp_path / "size.toml"
    config.write_text("input_size = 3\n")
    code, _, err = run_cli("train", "--config", config, "--dataset", ws / "ds", "--out", tmp_path / "run")
    one_line(code, err, "[height, width]")


def test_a_one_identity_dataset_is_told_the_truth(run_cli, tiny_gallery: Path, tmp_path: Path) -> None:
    rows = [f"{path},1,{camid}" for camid, path in enumerate(sorted((tiny_gallery / "gallery").glob("0001_*")))]
    (tmp_path / "one.csv").write_text("path,pid,camid\n" + "\n".join(rows) + "\n")
    code, _, err = run_cli("prepare", "--dataset", "folder", "--root", tmp_path / "one.csv", "--out", tmp_path / "ds")
    line = one_line(code, err, "1 identity", "at least 2", "more people")
    assert "between 1 and 0" not in line and not (tmp_path / "ds").exists()


def copy_with_manifest(ws: Path, tmp_path: Path, change) -> Path:
    dataset = Path(shutil.copytree(ws / "ds", tmp_path / "ds"))
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    change(manifest).to_parquet(dataset / "manifest.parquet", index=False)
    return dataset


def test_a_dataset_without_training_images_names_no_empty_list(run_cli, ws: Path, tmp_path: Path) -> None:
    dataset = copy_with_manifest(ws, tmp_path, lambda m: m[m["split"] != "train"])
    code, _, err = run_cli("train", "--dataset", dataset, "--out", tmp_path / "run", "--trial", "0")
    line = one_line(code, err, "no training images in any trial", "--test-ids")
    assert "[]" not in line


def test_a_manifest_with_text_pids_is_refused_naming_it(run_cli, ws: Path, tmp_path: Path) -> None:
    dataset = copy_with_manifest(ws, tmp_path, lambda m: m.assign(pid=m["pid"].astype(str)))
    report = ["report", "--checkpoint", ws / "cadnet.pt", "--dataset", dataset, "--workers", "0"]
    embed = ["embed", "--checkpoint", ws / "cadnet.pt", "--dataset", dataset, "--out", tmp_path / "idx"]
    for command in (report, embed):
        code, _, err = run_cli("--device", "cpu", *command)
        one_line(code, err, str(dataset / "manifest.parquet"), "column pid", "not integers", "reidx prepare")
