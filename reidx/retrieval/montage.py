"""A PNG montage of search results: one row per query, the query then its ranked hits, laid out by
``torchvision.utils.make_grid``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.nn.functional import pad
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid

from reidx.errors import ReidxError
from reidx.io import atomic_path, load_image
from reidx.retrieval.inputs import UNKNOWN
from reidx.retrieval.search import QueryResult

BORDER = 4
CAPTION = 14
GAP = 12
MATCH, MISMATCH, NEUTRAL = (0, 170, 0), (210, 0, 0), (160, 160, 160)
BACKGROUND, TEXT, FADED = (255, 255, 255), (0, 0, 0), (150, 150, 150)


def tile(path: str, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    """The image at ``size`` (W, H) in a coloured border; an unreadable file becomes a grey tile."""
    width, height = size
    framed = Image.new("RGB", (width + 2 * BORDER, height + 2 * BORDER), colour)
    try:
        image = load_image(path).resize(size, Image.BILINEAR)
    except ReidxError:
        image = Image.new("RGB", size, NEUTRAL)
        ImageDraw.Draw(image).text((4, 4), "missing", fill=TEXT, font=ImageFont.load_default())
    framed.paste(image, (BORDER, BORDER))
    return framed


def cell(
    path: str | None, size: tuple[int, int], colour: tuple[int, int, int], caption: str, ink: tuple
) -> torch.Tensor:
    """One montage cell as a (3, H, W) uint8 tensor: the framed image (none for a blank cell) over its caption."""
    width, height = size
    image = Image.new("RGB", (width + 2 * BORDER, height + 2 * BORDER + CAPTION), BACKGROUND)
    if path is not None:
        image.paste(tile(path, size, colour), (0, 0))
        ImageDraw.Draw(image).text((0, image.height - CAPTION + 2), caption, fill=ink, font=ImageFont.load_default())
    return pil_to_tensor(image)


def draw_montage(
    results: Sequence[QueryResult], out: str | Path, input_size: tuple[int, int], tile_height: int = 128
) -> Path:
    """Write the montage PNG: tiles at the model's aspect ratio, ``#rank score`` captions, green / red
    borders for same / other identity when the query's pid is known, faded captions under --min-score."""
    height, width = input_size
    size = (max(1, round(tile_height * width / height)), tile_height)
    columns = 1 + max((len(result.hits) for result in results), default=0)
    blank = cell(None, size, NEUTRAL, "", TEXT)
    cells = []
    for result in results:
        row = [cell(result.query, size, NEUTRAL, "query", TEXT)] + [blank] * (columns - 1)
        for hit in result.hits:
            colour = NEUTRAL if result.pid == UNKNOWN else MATCH if hit.pid == result.pid else MISMATCH
            caption = f"#{hit.rank} {hit.score:.3f}"
            row[hit.rank] = cell(hit.path, size, colour, caption, TEXT if hit.above_threshold else FADED)
        cells += row
    if len(cells) > 1:
        grid = make_grid(torch.stack(cells), nrow=columns, padding=GAP, pad_value=255)
    elif cells:  # make_grid returns a lone image unpadded
        grid = pad(cells[0], [GAP] * 4, value=255)
    else:
        grid = torch.full((3, GAP, blank.shape[2] + 2 * GAP), 255, dtype=torch.uint8)
    canvas = Image.fromarray(np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))
    out = Path(out)
    with atomic_path(out, "image") as tmp:
        canvas.save(tmp, format="PNG")
    return out
