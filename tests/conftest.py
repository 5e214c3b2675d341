"""Shared fixtures: tiny fake copies of the real dataset layouts, and an in-process CLI runner."""

from __future__ import annotations

import os

# torch and the FAISS wheel bundle their own OpenMP runtimes; busy-waiting threads of one starve the
# other on small machines and make small tests many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist (`make test` runs one worker per core) each worker, and the reidx processes it starts,
# computes on one thread: two workers of two threads each on two cores only fight over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Remembered checkpoint fingerprints (reidx.fingerprints) go to a fresh folder, not the user's cache,
# removed when the session ends.
os.environ["REIDX_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="reidx-test-cache-")

import atexit  # noqa: E402
import hashlib
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ImageWriter = Callable[..., Path]

atexit.register(shutil.rmtree, os.environ["REIDX_CACHE_DIR"], ignore_errors=True)


def _colour(name: str) -> tuple[int, int, int]:
    digest = hashlib.md5(name.encode()).digest()
    return digest[0], digest[1], digest[2]


def write_tiny_image(path: Path, size: tuple[int, int] = (16, 8)) -> Path:
    """A tiny image at ``path`` whose colour follows its name; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((*size, 3), dtype=np.uint8)
    array[:] = _colour(path.name)
    array[: size[0] // 2] //= 2
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def write_image() -> ImageWriter:
    """``write_image(path, size=(H, W))``: :func:`write_tiny_image`."""
    return write_tiny_image


def _write_all(write: ImageWriter, folder: Path, names: Iterable[str], size: tuple[int, int] = (16, 8)) -> None:
    for name in names:
        write(folder / name, size)


@pytest.fixture
def market_tree(write_image: ImageWriter) -> Callable[[Path], Path]:
    """``market_tree(base)`` writes a tiny Market-1501 copy under ``base`` and returns the folder holding
    the three standard subfolders. Train: ids 1-4, cameras 1-2, 2 images each (16). Query: ids 5-7 from
    camera 1 and id 7 from camera 2 (4). Test: ids 5-7 from cameras 2 and 3 (6), two distractors (pid 0)
    and three junk files (pid -1), so 8 gallery images after junk removal."""

    def make(base: Path) -> Path:
        train = [
            f"{pid:04d}_c{cam}s1_{100 * cam + k:06d}_01.jpg" for pid in range(1, 5) for cam in (1, 2) for k in (1, 2)
        ]
        query = [f"{pid:04d}_c1s1_000010_00.jpg" for pid in (5, 6, 7)] + ["0007_c2s1_000011_00.jpg"]
        gallery = [f"{pid:04d}_c{cam}s2_000020_01.jpg" for pid in (5, 6, 7) for cam in (2, 3)]
        gallery += ["0000_c1s1_000030_01.jpg", "0000_c4s1_000031_01.jpg"]
        gallery += ["-1_c1s1_000040_01.jpg", "-1_c2s1_000041_01.jpg", "-1_c5s1_000042_01.jpg"]
        _write_all(write_image, base / "bounding_box_train", train)
        _write_all(write_image, base / "query", query)
        _write_all(write_image, base / "bounding_box_test", gallery)
        (base / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
        return base

    return make


@pytest.fixture
def viper_tree(write_image: ImageWriter) -> Callable[[Path, int], Path]:
    """``viper_tree(base, ids)``: ``cam_a/``, ``cam_b/`` with ``NNN_ANGLE.bmp`` (16x8) per id."""

    def make(base: Path, ids: int = 10) -> Path:
        for pid in range(ids):
            write_image(base / "cam_a" / f"{pid:03d}_0.bmp")
            write_image(base / "cam_b" / f"{pid:03d}_90.bmp")
        return base

    return make


@pytest.fixture
def cuhk03_tree(write_image: ImageWriter) -> Callable[[Path], Path]:
    """Extracted CUHK03: camera pairs 1-2, pids 1-3 each (6 ids); per view 2 labeled and 1 detected
    image, so 6 per id and 36 in all."""

    def make(base: Path) -> Path:
        for campair in (1, 2):
            for pid in (1, 2, 3):
                for view in (1, 2):
                    for index in (1, 2):
                        write_image(
                            base / "images_labeled" / f"{campair}_{pid:03d}_{view}_{index + 5 * (view - 1):02d}.png"
                        )
                    write_image(base / "images_detected" / f"{campair}_{pid:03d}_{view}_{1 + 5 * (view - 1):02d}.png")
        return base

    return make


@pytest.fixture
def caviar_tree(write_image: ImageWriter) -> Callable[[Path], Path]:
    """CAVIAR4REID-style ``PPPPIII.jpg``: 6 two-camera ids (images 001-003 at 16x8 and 011-013 at 8x4,
    so camid 1 is the low-resolution camera) and 2 one-camera ids (001-003): 42 images."""

    def make(base: Path) -> Path:
        for pid in range(1, 9):
            for index in (1, 2, 3):
                write_image(base / f"{pid:04d}{index:03d}.jpg", (16, 8))
                if pid <= 6:
                    write_image(base / f"{pid:04d}{index + 10:03d}.jpg", (8, 4))
        return base

    return make


#: Files named like the real training-only sets: 3DPeS (3 ids, one SEQ with a letter prefix), SARC3D (2 ids
#: x 4 views, one spelt ``Right``), TownCentre (3 tracks of 1, 3 and 10 frames).
TRAINING_ONLY_NAMES = {
    "3DPeS": [
        "1_3_FRAME_26_RGB.png",
        "1_4_FRAME_70_RGB.png",
        "1_4_FRAME_185_RGB.png",
        "2_23_FRAME_12_RGB.png",
        "2_B_715_FRAME_179_RGB.png",
        "3_53_FRAME_103_RGB.png",
        "3_54_FRAME_19_RGB.png",
    ],
    "SARC3D": [f"{pid:03d}_{view}.png" for pid in (1, 2) for view in ("front", "back", "left", "right")],
    "TownCentre": ["0_8.jpg", *(f"1_{frame}.jpg" for frame in (5, 6, 7)), *(f"2_{frame}.jpg" for frame in range(10))],
}


@pytest.fixture
def training_only_tree() -> Callable[[Path, str], Path]:
    """``training_only_tree(base, folder)``: :func:`make_training_only_tree`."""

    return make_training_only_tree


def make_training_only_tree(base: Path, folder: str) -> Path:
    """``base/folder`` holding :data:`TRAINING_ONLY_NAMES` ``[folder]`` (SARC3D's ``001_right`` spelt ``Right``)."""
    names = [name.replace("001_right", "001_Right") for name in TRAINING_ONLY_NAMES[folder]]
    _write_all(write_tiny_image, base / folder, names)
    return base / folder


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """``run_cli("prepare", "--dataset", ...)`` runs the console entry point in-process and returns
    ``(exit code, stdout, stderr)``."""
    from reidx.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["reidx", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny CAD-Net checkpoint (seed 0, resnet18 from scratch, 4 ids, 64x32, its ``tiny`` options);
    copy it where a test may change it."""
    import torch

    from reidx.checkpoint import save_checkpoint
    from reidx.models import build_model, model_class

    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=4, arch="resnet18", **model_class("cadnet").tiny)
    path = tmp_path_factory.mktemp("tiny-checkpoint") / "cadnet.pt"
    save_checkpoint(path, model, (64, 32))
    return path


@pytest.fixture(scope="session")
def tiny_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``model.pt`` (an untrained resnet18 baseline at 64x32, seeded), ``gallery/`` (12 blocky
    Market-named crops: pids 1-4 x cameras 1-3), ``queries/`` (a 16x8 and a 32x16 crop of pids 2 and 3 from
    camera 1) and ``idx/``, its flat index."""
    import torch

    from reidx.checkpoint import save_checkpoint
    from reidx.models import build_model
    from reidx.models.loading import load_model
    from reidx.retrieval import EmbedJob, build_index, images_table

    root = tmp_path_factory.mktemp("tiny-gallery")
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", build_model("baseline", num_classes=4, arch="resnet18"), (64, 32))
    rng = np.random.default_rng(0)
    for folder in ("gallery", "queries"):
        (root / folder).mkdir()
    for pid in range(1, 5):
        blocks = (rng.random((4, 2, 3)) * 255).astype(np.uint8)
        for cam in range(1, 4):
            shifted = np.clip(blocks.astype(int) + rng.integers(-20, 20, blocks.shape), 0, 255).astype(np.uint8)
            Image.fromarray(shifted).resize((32, 64), Image.NEAREST).save(
                root / "gallery" / f"{pid:04d}_c{cam}s1_000001_00.png"
            )
    for pid, size in ((2, (8, 16)), (3, (16, 32))):
        image = Image.open(root / "gallery" / f"{pid:04d}_c1s1_000001_00.png")
        image.resize(size, Image.BICUBIC).save(root / "queries" / f"{pid:04d}_c1s2_000002_00.png")
    build_index(
        load_model(root / "model.pt"),
        images_table([root / "gallery"]),
        root / "idx",
        job=EmbedJob(batch_size=12, workers=0),
    )
    return root


@pytest.fixture(scope="session")
def live_server(tiny_gallery: Path):
    """``reidx serve``'s app on the tiny gallery, run by uvicorn in a thread on a free loopback port, with
    small limits (2 MiB bodies, 4 images a request); yields its base URL."""
    from reidx.device import Devices
    from reidx.retrieval.search import open_gallery
    from reidx.service.app import Limits, create_app
    from tests.servers import serving

    gallery, loaded = open_gallery(tiny_gallery / "idx", devices=Devices("cpu"))
    app = create_app(gallery, loaded, min_score=None, limits=Limits(body_bytes=2 * 2**20, images=4))
    with serving(app) as url:
        yield url
