"""No user data lost, per command: --overwrite and output overlap, concurrent writers, kills and leftovers.

Each case builds the situation, runs the command, and checks the exit code, the one-line message, that no
traceback was printed and that nothing of the user's changed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reidx.checkpoint import save_checkpoint
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.gallery import open_gallery_dir
from reidx.gallery.directory import PARTIAL_NAME
from reidx.models.loading import load_model
from reidx.provenance import registration
from reidx.retrieval import build_index, embed_paths, images_table
from reidx.retrieval.requests import EmbedJob

INPUT_SIZE = (64, 32)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A CAD-Net checkpoint, a prepared synthetic dataset ``ds`` and a folder of the user's ``photos``."""
    root = tmp_path_factory.mktemp("safety")
    shutil.copyfile(tiny_checkpoint, root / "cadnet.pt")
    prepare_dataset("synthetic", None, root / "ds", rates=(2,), ids=12, cameras=2, images_per_camera=2, workers=1)
    (root / "photos").mkdir()
    for path in sorted((root / "ds" / "hr").rglob("*.png"))[:16]:
        shutil.copyfile(path, root / "photos" / path.name)
    return root


def tree(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (relative path -> bytes), hidden ones included."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """Assert a one-line refusal (exit 1, no traceback) holding every needle; return the line."""
    code, _, err = result
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def embed_args(ws: Path, out: Path, *rest: str) -> list[str]:
    return ["--device", "cpu", "embed", "--checkpoint", str(ws / "cadnet.pt"), "--out", str(out), *rest,
            "--workers", "0", "--batch-size", "4"]  # fmt: skip


def reidx(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The real console script in its own process."""
    return subprocess.run([sys.executable, "-m", "reidx", *args], capture_output=True, text=True, timeout=300, **kwargs)


# --- 1. --overwrite replaces only what reidx wrote, of the same kind -------------------------------------


@pytest.mark.parametrize("target", ["ds", "photos", "file"])
def test_embed_never_replaces_what_is_not_an_index(run_cli, ws: Path, tmp_path: Path, target: str) -> None:
    if target == "file":
        out = tmp_path / "notes.txt"
        out.write_text("my notes")
    else:
        out = Path(shutil.copytree(ws / target, tmp_path / target))
    before = tree(out) if out.is_dir() else out.read_bytes()
    photos = str(ws / "photos")
    for flag in ([], ["--overwrite"], ["--append"]):
        line = refused(run_cli(*embed_args(ws, out, photos, *flag)))
        assert "--overwrite" not in line  # never recommended for something reidx did not write
    assert (tree(out) if out.is_dir() else out.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no lock file, no temporaries


def test_embed_overwrite_replaces_an_index_and_refuses_one_with_user_files(run_cli, ws: Path, tmp_path: Path) -> None:
    out, photos = tmp_path / "idx", ws / "photos"
    assert run_cli(*embed_args(ws, out, str(photos)))[0] == 0
    refused(run_cli(*embed_args(ws, out, str(photos))), "already holds an index", "--overwrite")
    assert run_cli(*embed_args(ws, out, str(photos / sorted(os.listdir(photos))[0]), "--overwrite"))[0] == 0
    assert len(open_gallery_dir(out, Devices("cpu"))) == 1
    (out / "holiday.jpg").write_bytes(b"the user's")
    before = tree(out)
    line = refused(run_cli(*embed_args(ws, out, str(photos), "--overwrite")), "did not write", "holiday.jpg")
    assert "--overwrite" not in line and tree(out) == before


def test_prepare_overwrite_refuses_a_dataset_of_another_kind_or_a_user_folder(run_cli, ws, tmp_path) -> None:
    index = tmp_path / "idx"
    build_index(load_model(ws / "cadnet.pt"), images_table([ws / "photos"]), index, job=EmbedJob(workers=0))
    photos = Path(shutil.copytree(ws / "photos", tmp_path / "photos"))
    for out, needle in ((index, "holds an index, not a prepared dataset"), (photos, "not written by reidx")):
        before = tree(out)
        args = ["prepare", "--dataset", "synthetic", "--ids", "6", "--cameras", "2", "--out", str(out)]
        line = refused(run_cli(*args, "--overwrite"), needle)
        assert "--overwrite" not in line and tree(out) == before


# --- 2. prepare never overlaps its sources -------------------------------------------------------------


def test_prepare_refuses_an_out_that_holds_the_source_images(run_cli, market_tree, tmp_path: Path) -> None:
    base = tmp_path / "work"
    root = market_tree(base / "market")
    (tmp_path / "alias").symlink_to(base)
    before = tree(base)
    for out in (base, root, tmp_path / "alias", root / "prepared"):
        args = ["prepare", "--dataset", "market1501", "--root", str(root), "--out", str(out), "--downsample", "2"]
        refused(run_cli(*args, "--overwrite"), "dataset root")
    assert tree(base) == before and sorted(p.name for p in tmp_path.iterdir()) == ["alias", "work"]


def test_prepare_refuses_an_out_that_holds_the_csv_or_its_images(run_cli, ws: Path, tmp_path: Path) -> None:
    images = sorted((ws / "ds" / "hr").rglob("*.png"))
    folder = tmp_path / "mine"
    (folder / "imgs").mkdir(parents=True)
    rows = ["path,pid,camid"]
    for image in images:
        shutil.copyfile(image, folder / "imgs" / image.name)
        pid, cam = re.match(r"(\d+)_c(\d+)", image.stem).groups()
        rows.append(f"imgs/{image.name},{int(pid)},{int(cam)}")
    (folder / "list.csv").write_text("\n".join(rows) + "\n")
    elsewhere = tmp_path / "lists" / "list.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("\n".join(row.replace("imgs/", f"{folder}/imgs/") for row in rows) + "\n")
    before = tree(folder)
    prepare = ["prepare", "--dataset", "folder", "--downsample", "2", "--overwrite"]
    refused(run_cli(*prepare, "--root", str(folder / "list.csv"), "--out", str(folder)), "dataset root")
    refused(run_cli(*prepare, "--root", str(elsewhere), "--out", str(folder)), "not written by reidx")
    assert tree(folder) == before
    ok = run_cli(*prepare, "--root", str(folder / "list.csv"), "--out", str(tmp_path / "mlr"))
    assert ok[0] == 0, ok[2]
    # a dataset whose own LR files are another dataset's sources is not replaced either
    lr = sorted((tmp_path / "mlr" / "lr").rglob("*.png"))
    (tmp_path / "lr.csv").write_text("path,pid,camid\n" + "".join(f"{p},{i // 2},{i % 2}\n" for i, p in enumerate(lr)))
    before = tree(tmp_path / "mlr")
    refused(run_cli(*prepare, "--root", str(tmp_path / "lr.csv"), "--out", str(tmp_path / "mlr")), "source images")
    assert tree(tmp_path / "mlr") == before


# --- 3. recover never writes over its inputs -----------------------------------------------------------


def test_recover_refuses_outputs_that_overlap_its_inputs(run_cli, ws: Path, tmp_path: Path) -> None:
    lr = Path(shutil.copytree(ws / "ds" / "lr", tmp_path / "lr"))
    hr = Path(shutil.copytree(ws / "ds" / "hr", tmp_path / "hr"))
    before = {"lr": tree(lr), "hr": tree(hr)}
    first = sorted(lr.rglob("*.png"))[0]
    recover = ["--device", "cpu", "recover", "--checkpoint", str(ws / "cadnet.pt"), "--workers", "0"]
    cases = [
        ([str(lr)], ["--out", str(lr)]),
        ([str(lr)], ["--out", str(tmp_path)]),
        ([str(first)], ["--out", str(first.parent)]),
        ([str(lr)], ["--out", str(hr), "--hr", str(hr)]),
        ([str(lr)], ["--out", str(tmp_path / "rec"), "--grid", str(first)]),
    ]
    for inputs, options in cases:
        refused(run_cli(*recover, *inputs, *options), "input")
    assert {"lr": tree(lr), "hr": tree(hr)} == before and not (tmp_path / "rec").exists()
    photos = Path(shutil.copytree(ws / "photos", tmp_path / "photos"))
    line = refused(run_cli(*recover, str(lr), "--out", str(photos)), "not written by reidx")
    assert "--overwrite" not in line
    rec = tmp_path / "rec"
    for _ in range(2):  # its own output folder may be written again
        done = run_cli(*recover, str(lr), "--out", str(rec), "--grid", str(rec / "grid.png"))
        assert done[0] == 0, done[2]
    assert len(list(rec.glob("*.png"))) == len(list(lr.rglob("*.png"))) + 1


# --- 4. concurrent writers: refused, never a lost update -----------------------------------------------

SLOW_APPEND = """
import sys, time
from pathlib import Path
from reidx.retrieval import EmbedJob, build_index, images_table
from reidx.models.loading import load_model
checkpoint, images, out, hold_at, go = sys.argv[1:]
def hook(done):
    print("chunk", done, flush=True)
    while done >= int(hold_at) and not Path(go).exists():
        time.sleep(0.05)
job = EmbedJob(batch_size=4, workers=0, flush_seconds=0, on_chunk=hook)
build_index(load_model(checkpoint), images_table([Path(images)]), out, append=True, job=job)
print("done", flush=True)
"""


def slow_append(ws: Path, images: Path, out: Path, hold_at: int, go: Path) -> subprocess.Popen:
    """A real process appending ``images`` to ``out`` in batches of 4, each kept on disk; once ``hold_at``
    images are done it waits for the file ``go``. Returned when that point is reached (it holds the lock)."""
    command = [sys.executable, "-c", SLOW_APPEND, str(ws / "cadnet.pt"), str(images), str(out), str(hold_at), str(go)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for done in range(4, hold_at + 1, 4):
        assert process.stdout.readline().split() == ["chunk", str(done)], "the appending process failed"
    return process


def test_two_appends_at_once_lose_no_image(ws: Path, tmp_path: Path) -> None:
    photos = sorted((ws / "photos").iterdir())
    for name, part in (("a", photos[:4]), ("b", photos[4:12]), ("c", photos[12:])):
        (tmp_path / name).mkdir()
        for path in part:
            shutil.copyfile(path, tmp_path / name / path.name)
    out = tmp_path / "idx"
    assert reidx(*embed_args(ws, out, str(tmp_path / "a"))).returncode == 0
    first = slow_append(ws, tmp_path / "b", out, 4, tmp_path / "go")
    try:
        second = reidx(*embed_args(ws, out, str(tmp_path / "c"), "--append"))
    finally:
        (tmp_path / "go").touch()
        rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and rest.strip().endswith("done")
    refused(
        (second.returncode, second.stdout, second.stderr), f"being written by another reidx process (pid {first.pid})"
    )
    assert len(open_gallery_dir(out, Devices("cpu"))) == 12  # a + b: nothing of b was lost
    assert reidx(*embed_args(ws, out, str(tmp_path / "c"), "--append")).returncode == 0
    paths = set(open_gallery_dir(out, Devices("cpu")).metadata["path"])
    assert paths == {str(tmp_path / name / p.name) for name, part in (("a", photos[:4]), ("b", photos[4:12]),
                                                                      ("c", photos[12:])) for p in part}  # fmt: skip


# --- 5. kills and leftovers ----------------------------------------------------------------------------


def test_kill_9_mid_embed_resumes_bit_identical_and_leaves_nothing(ws: Path, tmp_path: Path) -> None:
    photos = ws / "photos"
    out = tmp_path / "idx"
    process = slow_append(ws, photos, out, 8, tmp_path / "never")  # two batches are on disk
    process.send_signal(signal.SIGKILL)
    process.wait()
    chunks = sorted((out / PARTIAL_NAME).glob("chunk-*.npy"))
    assert len(chunks) >= 2 and not (out / "header.json").exists()
    left = [
        out / PARTIAL_NAME / f".{chunks[-1].name}.{process.pid}-abcdefgh.tmp",
        tmp_path / f".idx.{process.pid}-abcdefgh.tmp",
    ]
    left[0].write_bytes(b"half a chunk")
    damage_chunk(chunks[0], "zeroed")  # header intact, vectors zero: re-embedded, never indexed
    left[1].mkdir()  # as a kill during the final write leaves them, registered in the killed writer's lock file:
    with open(tmp_path / ".idx.lock", "ab") as lock:
        lock.writelines(registration(tmp_path, path) for path in left)
    mine = tmp_path / f".idx.{process.pid}-deadbeef.tmp"  # the user's, named like one: never deleted
    mine.write_bytes(b"mine")
    done = reidx(*embed_args(ws, out, str(photos)))
    assert done.returncode == 0, done.stderr
    assert f"discarded the embedding chunk {chunks[0]}: its bytes do not match its checksum" in done.stderr
    expected = embed_paths(load_model(ws / "cadnet.pt"), sorted(map(str, photos.iterdir())), batch_size=4, workers=0)
    gallery = open_gallery_dir(out, Devices("cpu"))
    assert np.array_equal(gallery.index.reconstruct_n(0, len(gallery)), expected)  # bit-identical
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "idx"]  # the killed writer's are gone
    assert mine.read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == [".reidx-output.json", "header.json", "index.faiss",
                                                     "metadata.parquet"]  # fmt: skip


def interrupted_embed(cadnet, photos: Path, out: Path) -> list[Path]:
    """The chunks an embed of ``photos`` into ``out`` leaves when it stops after 8 images (two of 4)."""

    def stop(done: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(
            cadnet, images_table([photos]), out, job=EmbedJob(batch_size=4, workers=0, flush_seconds=0, on_chunk=stop)
        )
    return sorted((out / PARTIAL_NAME).glob("chunk-*.npy"))


def damage_chunk(chunk: Path, damage: str) -> None:
    """Damage a chunk file in place: cut, replaced, or its vectors' bytes NaN or zero under an intact header."""
    data = chunk.read_bytes()
    if damage == "old name":  # as reidx wrote chunks before they carried a checksum
        chunk.rename(chunk.with_name("-".join(chunk.name.split("-")[:3]) + ".npy"))
    elif damage == "truncated":
        chunk.write_bytes(data[:100])
    elif damage == "wrong rows":
        np.save(chunk, np.zeros((3, 1024), np.float32))
    else:
        with open(chunk, "rb") as handle:
            assert np.lib.format.read_magic(handle) == (1, 0)
            np.lib.format.read_array_header_1_0(handle)
            offset = handle.tell()
        fill = np.full((len(data) - offset) // 4, np.nan if damage == "nan" else 0.0, np.float32)
        chunk.write_bytes(data[:offset] + fill.tobytes())


@pytest.mark.parametrize(
    ("damage", "which"), [("truncated", -1), ("wrong rows", -1), ("nan", 0), ("zeroed", 0), ("old name", -1)]
)
def test_a_damaged_partial_chunk_is_re_embedded_with_a_note(ws: Path, tmp_path: Path, damage: str, which: int) -> None:
    cadnet, photos, out = load_model(ws / "cadnet.pt"), ws / "photos", tmp_path / "idx"
    chunks = interrupted_embed(cadnet, photos, out)
    assert len(chunks) == 2
    damage_chunk(chunks[which], damage)
    done = reidx(*embed_args(ws, out, str(photos)))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    if damage == "old name":
        old = chunks[which].with_name(chunks[which].name[:27] + ".npy")
        why = f"{old}: its name carries no checksum (a chunk of an older reidx, or not a chunk); the images it held"
    else:
        images = "0 to 3" if which == 0 else "4 to 7"
        why = f"{chunks[which]}: its bytes do not match its checksum (damaged); its images {images}"
    assert done.stderr.strip() == f"note: discarded the embedding chunk {why} are embedded again"
    expected = embed_paths(cadnet, list(images_table([photos])["path"]), batch_size=4, workers=0)
    gallery = open_gallery_dir(out, Devices("cpu"))
    assert np.array_equal(gallery.index.reconstruct_n(0, len(gallery)), expected)  # the rest kept, bit-identical


def test_vectors_that_are_not_unit_vectors_never_reach_an_index(ws: Path, tmp_path: Path) -> None:
    from reidx.retrieval.jobs import write_chunk

    cadnet, photos, out = load_model(ws / "cadnet.pt"), ws / "photos", tmp_path / "idx"
    chunk = interrupted_embed(cadnet, photos, out)[0]
    vectors = np.load(chunk)
    vectors[1], vectors[3] = np.nan, 0.0
    chunk.unlink()
    paths, lite = sorted(map(str, photos.iterdir())), tmp_path / "gallery.db"
    for backend in (["--backend", "milvus", "--uri", str(lite)], []):  # the check comes before either backend
        write_chunk(chunk.parent, 0, vectors)  # its checksum matches its bad bytes: only the vectors tell
        result = reidx(*embed_args(ws, out, str(photos), *backend))
        refused(  # (a finished progress bar leaves a blank line on a stderr that is not a terminal)
            (result.returncode, result.stdout, result.stderr.lstrip("\n")),
            f"{out / PARTIAL_NAME} holds 2 embeddings that are not finite unit vectors (NaN, inf or zero), of "
            f"{paths[1]}, {paths[3]}; nothing was stored",
            "run the same command again: it embeds the images of the 1 removed chunk(s) again",
        )
        assert sorted(p.name for p in out.iterdir()) == [PARTIAL_NAME] and not lite.exists()
        assert not list(chunk.parent.glob("chunk-0000000000-*"))  # removed: the next run embeds it again
    assert reidx(*embed_args(ws, out, str(photos))).returncode == 0
    gallery = open_gallery_dir(out, Devices("cpu"))
    expected = embed_paths(cadnet, paths, batch_size=4, workers=0)
    assert np.array_equal(gallery.index.reconstruct_n(0, len(gallery)), expected)


def test_a_model_giving_nan_embeddings_is_refused_naming_the_images(run_cli, ws: Path, tmp_path: Path) -> None:
    model = load_model(ws / "cadnet.pt").model
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 4:
                weight.mul_(1e18)  # finite weights whose activations overflow
    save_checkpoint(tmp_path / "overflow.pt", model, INPUT_SIZE)
    out, first = tmp_path / "idx", sorted((ws / "photos").iterdir())[0]
    args = ["--device", "cpu", "embed", "--checkpoint", tmp_path / "overflow.pt", ws / "photos", "--out", out]
    code, stdout, stderr = run_cli(*args, "--workers", "0", "--batch-size", "4")
    line = refused((code, stdout, stderr.lstrip("\n")), "overflow.pt gives 16 embeddings that are not finite unit")
    assert f"of {first}, " in line and "and 13 more — nothing of them was stored" in line
    assert not (out / "header.json").exists()
    assert not list((out / PARTIAL_NAME).glob("chunk-*"))


def test_progress_is_kept_every_few_seconds_not_only_every_chunk(ws: Path, tmp_path: Path) -> None:
    cadnet, table = load_model(ws / "cadnet.pt"), images_table([ws / "photos"])
    seen: list[int] = []
    build_index(
        cadnet, table, tmp_path / "a", job=EmbedJob(batch_size=4, workers=0, flush_seconds=0, on_chunk=seen.append)
    )
    assert seen == [4, 8, 12, 16]  # a small gallery (one 4096-image chunk) keeps every batch
    seen.clear()
    build_index(cadnet, table, tmp_path / "b", job=EmbedJob(batch_size=4, workers=0, on_chunk=seen.append))
    assert seen == [16]  # the default: at most one flush per FLUSH_SECONDS


def test_prepare_a_second_writer_is_refused_and_a_killed_one_leaves_nothing(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["prepare", "--dataset", "synthetic", "--ids", "300", "--cameras", "2", "--images-per-camera", "4",
            "--downsample", "2", "--workers", "1", "--out", str(out)]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "reidx", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".ds.*.tmp")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until it builds its temporary folder (it holds the lock by then)
        second = reidx(*args)
        refused((second.returncode, second.stdout, second.stderr), f"another reidx process (pid {first.pid})")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not out.exists() and list(tmp_path.glob(".ds.*.tmp"))  # killed halfway: only its temporary
    again = reidx(*args[:4], "60", *args[5:])
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the killed run's temporary is gone
