"""The one image decoder: every image reidx reads goes through :func:`load_image` (or :func:`image_size`).

What it promises, for every reader (prepare, training, embed, search, recover, report, montages):

* the claimed size is checked against :func:`max_pixels` *before* any pixel is decoded, so a tiny file
  whose header claims a huge image (a decompression bomb) is refused in one line;
* only raster formats reidx expects are opened (:data:`FORMATS`), never PIL's other plugins;
* the EXIF orientation is applied, so a phone photo is upright;
* every mode becomes 8-bit RGB by its meaning: 16-bit grey ("I;16", "I") is scaled from 0..65535,
  32-bit float ("F") from 0..1 (anything else is refused), CMYK, YCbCr, 1-bit and palettes are
  converted, and transparency (RGBA, LA, PA, palettes or grey with a transparent colour) is composited
  on mid-grey :data:`BACKGROUND`, never dropped to expose hidden pixels.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from reidx.errors import ReidxError, one_line

#: The file suffixes of images in folders (a folder of queries, a dataset's folders).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
#: Formats reidx decodes (PIL names); others, even if PIL could open them, are refused.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: Default pixel limit: a 24-megapixel photo passes, far above any person crop.
DEFAULT_MAX_PIXELS = 25_000_000
#: Environment variable that overrides the pixel limit.
MAX_PIXELS_ENV = "REIDX_MAX_PIXELS"
#: What transparent pixels are composited on: mid-grey, the neutral value of the model input.
BACKGROUND = (128, 128, 128)
#: EXIF orientation tag and the transposition that makes each value upright (EXIF 2.3, tag 0x0112).
ORIENTATION_TAG = 0x0112
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: What a damaged file makes PIL raise while opening or decoding.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
CORRUPT = "the file is corrupt, truncated or not an image; replace or remove it"

# reidx checks the claimed size of every image it opens against max_pixels() before decoding; PIL's own
# process-wide check would only warn (outside the one-line error) or raise with another limit.
Image.MAX_IMAGE_PIXELS = None


def max_pixels() -> int:
    """The pixel limit: ``$REIDX_MAX_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ReidxError(f"{MAX_PIXELS_ENV}={text!r} is not a positive integer", f"e.g. {MAX_PIXELS_ENV}=50000000")
    return value


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix), sorted by path."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Files as given and the images below folders (recursively, sorted), resolved, duplicates dropped."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = list_images(item, recursive=True)
            if not found:
                raise ReidxError(f"{item} holds no images (.jpg, .jpeg, .png, .bmp)", "point at a folder of images")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise ReidxError(f"image not found: {item}", "check the path")
    return list(dict.fromkeys(path.resolve() for path in paths))


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` decoded, upright, as 8-bit RGB; anything wrong with it raises ReidxError."""
    path = Path(path)
    with open_image_file(path) as handle:
        return decode(handle, str(path))


def open_image_file(path: Path) -> BinaryIO:
    """``path`` opened for reading; a missing or unreadable file (permissions, a folder) is one ReidxError."""
    if not path.is_file():
        raise ReidxError(f"image not found: {path}", "check the path (and the dataset root)")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ReidxError(
            f"cannot read image {path}: {(exc.strerror or type(exc).__name__).lower()}",
            "make it readable (chmod a+r) or move it out of the folder",
        ) from None


def image_from_bytes(data: bytes, name: str) -> Image.Image:
    """Like :func:`load_image` for encoded bytes; ``name`` says where they came from in errors."""
    return decode(io.BytesIO(data), name)


def image_format(data: bytes, name: str) -> str:
    """The format (one of :data:`FORMATS`) of encoded image bytes, after decoding them (size checked first);
    bytes that are not such an image raise ReidxError."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            checked_size(image, name)
            image.load()
            return str(image.format)
    except ReidxError:
        raise
    except DECODE_ERRORS as exc:
        raise ReidxError(f"cannot read image {name}: {reason(exc)}", CORRUPT) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the upright image, from its header only (no pixels decoded)."""
    path = Path(path)
    try:
        with open_image_file(path) as handle, Image.open(handle, formats=FORMATS) as image:
            width, height = checked_size(image, str(path))
            return (height, width) if orientation(image) in (5, 6, 7, 8) else (width, height)
    except ReidxError:
        raise
    except DECODE_ERRORS as exc:
        raise ReidxError(f"cannot read image {path}: {reason(exc)}", CORRUPT) from None


def decode(handle: BinaryIO, name: str) -> Image.Image:
    """Open (formats and size checked), decode, orient and convert one image to RGB."""
    try:
        with Image.open(handle, formats=FORMATS) as image:
            checked_size(image, name)
            image.load()
            turn = UPRIGHT.get(orientation(image))
            rgb = to_rgb(image, name)
    except ReidxError:
        raise
    except DECODE_ERRORS as exc:
        raise ReidxError(f"cannot read image {name}: {reason(exc)}", CORRUPT) from None
    return rgb.transpose(turn) if turn is not None else rgb


def reason(exc: BaseException) -> str:
    """A short, one-line reason for a decoding failure."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"not a {', '.join(FORMATS)} image"
    return one_line(exc)


def checked_size(image: Image.Image, name: str) -> tuple[int, int]:
    """The header's ``(width, height)``, refused when it claims more than :func:`max_pixels`."""
    width, height = image.size
    limit = max_pixels()
    if width * height > limit:
        raise ReidxError(
            f"image {name} claims {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(a decompression bomb, or not a person crop)",
            f"crop or shrink it; if it is genuine, raise the limit with {MAX_PIXELS_ENV}",
        )
    if width < 1 or height < 1:
        raise ReidxError(f"image {name} is empty ({width}x{height})", CORRUPT)
    return width, height


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright) of an opened image."""
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def to_rgb(image: Image.Image, name: str) -> Image.Image:
    """8-bit RGB by the meaning of ``image``'s mode (see the module docstring)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ReidxError(f"cannot read image {name}: integer pixels outside 0..65535", "save it as 8 or 16 bit")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 1:
            raise ReidxError(f"cannot read image {name}: float pixels outside 0..1", "save it as 8 or 16 bit")
        return Image.fromarray(np.round(values * 255).astype(np.uint8)).convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.copy() if mode == "RGB" else image.convert("RGB")  # a copy: the opened image is closed
