"""What ``GET /gallery/{id}/image`` may hand out: only image files inside the image roots, never whatever a
metadata row names.

Indexes are copied between people, and a row of ``metadata.parquet`` is easily edited to ``/etc/shadow``.
So an entry's file is served only when its path, symlinks resolved, lies inside one of the roots (the folders
``reidx embed`` recorded in the header, or the operator's ``--image-root`` folders, which replace them), its
name has an image suffix, and its bytes decode as an image (:mod:`reidx.images`); the bytes checked are the
bytes sent. Any other entry is answered with one JSON line while the rest are served. An index of an older
reidx records no roots: its images are served only from the folders the operator names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from reidx.errors import ReidxError
from reidx.images import FORMATS, image_format

#: File name suffixes of the formats reidx decodes (.jpg, .png, .bmp, .webp, .tif, ...).
IMAGE_SUFFIXES = frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in FORMATS)
#: The largest gallery file served (person crops are a few kB).
MAX_FILE_BYTES = 32 * 2**20


@dataclass
class Unavailable(Exception):
    """Why one entry's image is not served: an HTTP status, the message and the fix."""

    status: int
    message: str
    fix: str


@dataclass(frozen=True)
class ImageFile:
    """The bytes of one served gallery image and their media type."""

    data: bytes
    media_type: str


class GalleryFiles:
    """The gallery images inside ``roots``; ``origin`` says where the roots came from, for messages."""

    def __init__(self, roots: Sequence[str | os.PathLike], origin: str) -> None:
        self.roots = tuple(Path(os.path.realpath(root)) for root in roots)
        self.origin = origin

    def read(self, entry: int, path: str) -> ImageFile:
        """The image of gallery entry ``entry`` at ``path``, or :class:`Unavailable` saying why not."""
        if not self.roots:
            raise Unavailable(
                403,
                f"gallery images are not served: {self.origin} records no image folders (an index of an older reidx)",
                "re-embed the gallery with this reidx, or start `reidx serve` with --image-root DIR",
            )
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError):  # a NUL byte, a symlink loop
            real = None
        if real is None or not any(real.is_relative_to(root) for root in self.roots):
            raise Unavailable(
                403,
                f"gallery entry {entry} is not served: {path} is outside the image folders of {self.origin}",
                "serve an index embedded from its images, or name their folder with --image-root DIR",
            )
        if real.suffix.lower() not in IMAGE_SUFFIXES:
            raise Unavailable(403, f"gallery entry {entry} is not served: {path} is not an image file", "re-embed it")
        try:
            if real.stat().st_size > MAX_FILE_BYTES:
                raise Unavailable(403, f"gallery entry {entry} is not served: {path} is over 32 MiB", "re-embed it")
            data = real.read_bytes()
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise Unavailable(
                404, f"the image of gallery entry {entry} cannot be read: {path}: {reason}", "check the file"
            ) from None
        try:
            kind = image_format(data, path)
        except ReidxError as exc:
            raise Unavailable(403, f"gallery entry {entry} is not served: {exc.message}", "re-embed it") from None
        return ImageFile(data, Image.MIME.get(kind, "application/octet-stream"))
