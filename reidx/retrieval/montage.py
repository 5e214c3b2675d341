"""A PNG montage of search results: one row per query, the query then its ranked hits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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


def draw_montage(
    results: Sequence[QueryResult], out: str | Path, input_size: tuple[int, int], tile_height: int = 128
) -> Path:
    """Write the montage PNG: tiles at the model's aspect ratio, ``#rank score`` captions, green / red
    borders for same / other identity when the query's pid is known, faded captions under --min-score."""
    height, width = input_size
    size = (max(1, round(tile_height * width / height)), tile_height)
    cell_w, cell_h = size[0] + 2 * BORDER, size[1] + 2 * BORDER + CAPTION
    columns = 1 + max((len(result.hits) for result in results), default=0)
    canvas = Image.new("RGB", (columns * (cell_w + GAP) + GAP, len(results) * (cell_h + GAP) + GAP), BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for row, result in enumerate(results):
        top = GAP + row * (cell_h + GAP)
        canvas.paste(tile(result.query, size, NEUTRAL), (GAP, top))
        draw.text((GAP, top + cell_h - CAPTION + 2), "query", fill=TEXT, font=font)
        for hit in result.hits:
            left = GAP + hit.rank * (cell_w + GAP)
            colour = NEUTRAL if result.pid == UNKNOWN else MATCH if hit.pid == result.pid else MISMATCH
            canvas.paste(tile(hit.path, size, colour), (left, top))
            caption = f"#{hit.rank} {hit.score:.3f}"
            draw.text(
                (left, top + cell_h - CAPTION + 2),
                caption,
                fill=TEXT if hit.above_threshold else FADED,
                font=font,
            )
    out = Path(out)
    with atomic_path(out, "image") as tmp:
        canvas.save(tmp, format="PNG")
    return out
