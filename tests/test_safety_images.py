"""The one image decoder against hostile and unusual files: orientation, every mode, bombs, damage."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidx.errors import ReidxError
from reidx.images import BACKGROUND, MAX_PIXELS_ENV, image_from_bytes, image_size, load_image
from reidx.io import load_image as io_load_image

REPO = Path(__file__).resolve().parents[1]


def pixels(path: Path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A 60-byte PNG whose header claims ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_every_image_open_in_reidx_goes_through_the_decoder() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "reidx").rglob("*.py"))
        if path.name != "images.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"Image\.open\(|imread\(", line)
    ]
    assert offenders == []
    assert io_load_image is load_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((16, 8, 3), dtype=np.uint8)
    array[:4] = 255  # a white head on top of a tall 8x16 person
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the camera says "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.rot90(array, 1).copy()).save(path, exif=exif, quality=100)
    upright = pixels(path)
    assert upright.shape == (16, 8, 3) and image_size(path) == (8, 16)
    assert upright[:4].mean() > 200 and upright[8:].mean() < 30  # the head is on top again


def test_sixteen_bit_grey_is_scaled_not_white(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 16 * 8).round().astype(np.uint16).reshape(16, 8)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # PIL keeps it 16-bit
    decoded = pixels(path)
    expected = np.round(ramp / 257).astype(np.uint8)
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255 and 120 < decoded.mean() < 135


def test_32_bit_integer_and_float_images(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 32768, dtype=np.int32), mode="I").save(tmp_path / "i.tif")
    assert set(np.unique(pixels(tmp_path / "i.tif"))) == {128}
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    assert set(np.unique(pixels(tmp_path / "f.tif"))) == {128}
    Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32), mode="F").save(tmp_path / "f255.tif")
    with pytest.raises(ReidxError, match=r"f255.tif: float pixels outside 0\.\.1"):
        load_image(tmp_path / "f255.tif")


def test_transparency_is_composited_on_grey(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red hidden under alpha 0 on the left, opaque red on the right
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    decoded = pixels(tmp_path / "rgba.png")
    assert tuple(decoded[0, 0]) == BACKGROUND and tuple(decoded[0, 3]) == (255, 0, 0)
    la = np.stack([np.full((4, 4), 10, np.uint8), np.full((4, 4), 0, np.uint8)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert tuple(pixels(tmp_path / "la.png")[0, 0]) == BACKGROUND
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 250, 0, 0] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=1)
    assert tuple(pixels(tmp_path / "p.png")[0, 0]) == BACKGROUND
    palette.save(tmp_path / "p_opaque.png")
    assert tuple(pixels(tmp_path / "p_opaque.png")[0, 0]) == (250, 0, 0)


def test_cmyk_one_bit_and_grey(tmp_path: Path) -> None:
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    red = pixels(tmp_path / "cmyk.jpg")[0, 0].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    bits = Image.new("1", (4, 4), 0)
    bits.putpixel((0, 0), 1)
    bits.save(tmp_path / "bits.png")
    assert tuple(pixels(tmp_path / "bits.png")[0, 0]) == (255, 255, 255)
    assert tuple(pixels(tmp_path / "bits.png")[1, 1]) == (0, 0, 0)
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    assert set(np.unique(pixels(tmp_path / "grey.png"))) == {77}


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(ReidxError, match=r"bomb\.png claims 100000x100000 = 10,000,000,000 pixels") as error:
        load_image(bomb)
    assert "\n" not in error.value.line() and "REIDX_MAX_PIXELS" in error.value.line()
    with pytest.raises(ReidxError, match="claims"):
        image_size(bomb)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    Image.new("RGB", (10, 10)).save(tmp_path / "ok.png")
    Image.new("RGB", (11, 10)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "ok.png").size == (10, 10)
    with pytest.raises(ReidxError, match="over the limit of 100"):
        load_image(tmp_path / "big.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ReidxError, match="REIDX_MAX_PIXELS='lots' is not a positive integer"):
        load_image(tmp_path / "ok.png")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "cannot read image"),
        (b"GIF89a garbage", "cannot read image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a JPEG, PNG"),  # no Ghostscript ever runs
    ],
)
def test_damaged_or_foreign_files_are_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ReidxError, match=needle) as error:
        load_image(path)
    assert str(path) in error.value.line() and "\n" not in error.value.line()


def test_truncated_png_and_bytes(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReidxError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    assert image_from_bytes(data, "cache").size == (32, 64)
    with pytest.raises(ReidxError, match="cannot read image the cache"):
        image_from_bytes(data[:40], "the cache")
    with pytest.raises(ReidxError, match="image not found"):
        load_image(tmp_path / "missing.png")


def test_model_input_loader_sees_the_decoded_image(tmp_path: Path) -> None:
    """embed, search, report and recover decode through the batched loader (here in a worker process):
    an EXIF-rotated JPEG and a 16-bit PNG arrive as their upright 8-bit equivalents."""
    from reidx.data.loading import iterate_images

    array = np.random.default_rng(1).integers(0, 256, (32, 16, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned clockwise: "rotate 90 degrees counter-clockwise to view"
    Image.fromarray(np.rot90(array, -1).copy()).save(tmp_path / "turned.tiff", exif=exif)
    grey = array[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    paths = [str(tmp_path / name) for name in ("upright.png", "turned.tiff", "grey8.png", "grey16.png")]
    batches = list(iterate_images(paths, (32, 16), batch_size=1, workers=1))
    images = [batch[0][0] for batch in batches]
    assert torch.equal(images[0], images[1]) and torch.equal(images[2], images[3])
