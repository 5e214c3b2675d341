"""A procedural pedestrian data set that ships with reidx: no download, seeded, deterministic.

Identities differ by clothing colours, shirt pattern (plain, horizontal or vertical stripes, checks),
body proportions, shorts, and accessories (bag, hat). Cameras differ by illumination (gain and tint),
background (two-colour gradient, low-frequency texture, floor band), viewpoint (horizontal shift, scale,
mirror) and native resolution (:data:`NATIVE_SIZES`, cycled). Every image adds its own jitter: position,
scale, stride, an occasional mirror, brightness and pixel noise. Images are written as Market-style names
``PPPP_cCs1_NNNNNN_00.png`` (pid from 1, camera from 1; camid = C, as every reader reads such names), so
the folder reader reads them back with the same identities and cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidx.console import progress
from reidx.data.base import (
    QUERY_RULE,
    DatasetReader,
    Options,
    Record,
    Source,
    Split,
    held_out_count,
    ids_of,
    parse_market_name,
    per_camera_query_split,
)
from reidx.data.registry import register_dataset
from reidx.errors import ReidxError

#: Native (H, W) per camera, cycled: cameras with different resolutions, as in real surveillance.
NATIVE_SIZES: tuple[tuple[int, int], ...] = ((128, 64), (96, 48), (112, 56), (80, 40))
SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.88, 0.67, 0.52], [0.72, 0.52, 0.38], [0.50, 0.34, 0.24]])
PLAIN, H_STRIPES, V_STRIPES, CHECKS = range(4)
#: Seed-sequence tags keep the identity, camera and image streams independent.
_IDENTITY, _CAMERA, _IMAGE = 1, 2, 3


def random_colour(rng: np.random.Generator, value: tuple[float, float] = (0.2, 0.95)) -> np.ndarray:
    """An RGB colour in [0, 1] from a random hue, saturation and value."""
    hue, saturation, val = rng.random(), rng.uniform(0.25, 1.0), rng.uniform(*value)
    channel = np.abs((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1
    return (val * (1 - saturation + saturation * np.clip(channel, 0, 1))).astype(np.float32)


@dataclass(frozen=True)
class Identity:
    """What makes one person recognisable (proportions are fractions of body height)."""

    shirt: np.ndarray
    trousers: np.ndarray
    pattern: int
    pattern_colour: np.ndarray
    period: float
    skin: np.ndarray
    hair: np.ndarray
    shoes: np.ndarray
    head: float
    torso: float
    shoulders: float
    leg: float
    shorts: bool
    bag: np.ndarray | None
    hat: np.ndarray | None


@dataclass(frozen=True)
class Camera:
    """One camera's look: native size, illumination, background and viewpoint."""

    size: tuple[int, int]
    gain: float
    tint: np.ndarray
    background: np.ndarray
    shift: float
    scale: float
    mirror: bool


def make_identity(seed: int, pid: int) -> Identity:
    """Identity ``pid``'s appearance, from ``seed`` only."""
    rng = np.random.default_rng([seed, _IDENTITY, pid])
    return Identity(
        shirt=random_colour(rng),
        trousers=random_colour(rng, (0.15, 0.8)),
        pattern=int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])),
        pattern_colour=random_colour(rng),
        period=float(rng.uniform(0.035, 0.07)),
        skin=(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05)).astype(np.float32),
        hair=random_colour(rng, (0.05, 0.45)),
        shoes=random_colour(rng, (0.05, 0.6)),
        head=float(rng.uniform(0.055, 0.075)),
        torso=float(rng.uniform(0.26, 0.34)),
        shoulders=float(rng.uniform(0.1, 0.15)),
        leg=float(rng.uniform(0.04, 0.06)),
        shorts=bool(rng.random() < 0.2),
        bag=random_colour(rng) if rng.random() < 0.35 else None,
        hat=random_colour(rng) if rng.random() < 0.25 else None,
    )


def make_camera(seed: int, camid: int) -> Camera:
    """Camera ``camid``'s look, from ``seed`` only; its background is rendered once at native size."""
    rng = np.random.default_rng([seed, _CAMERA, camid])
    height, width = NATIVE_SIZES[camid % len(NATIVE_SIZES)]
    top, bottom, floor = random_colour(rng), random_colour(rng), random_colour(rng, (0.2, 0.6))
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    coarse = rng.normal(0.0, 1.0, size=(6, 3, 3)).astype(np.float32)
    for channel in range(3):
        plane = Image.fromarray(coarse[:, :, channel], mode="F").resize((width, height), Image.BILINEAR)
        background[:, :, channel] += 0.08 * np.asarray(plane)
    floor_row = int(height * rng.uniform(0.78, 0.9))
    background[floor_row:] = 0.6 * background[floor_row:] + 0.4 * floor
    return Camera(
        size=(height, width),
        gain=float(rng.uniform(0.75, 1.2)),
        tint=rng.uniform(0.88, 1.12, size=3).astype(np.float32),
        background=np.clip(background, 0, 1),
        shift=float(rng.uniform(-0.08, 0.08)),
        scale=float(rng.uniform(0.82, 0.98)),
        mirror=bool(rng.random() < 0.5),
    )


def render(person: Identity, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """One (H, W, 3) uint8 image of ``person`` seen by ``camera``, with per-image jitter from ``rng``."""
    height, width = camera.size
    image = camera.background.copy()
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    body = 0.92 * height * camera.scale * rng.uniform(0.95, 1.04)
    top = (height - body) / 2 + rng.uniform(-0.03, 0.03) * height
    cx = width * (0.5 + camera.shift + rng.uniform(-0.06, 0.06))
    side = -1.0 if camera.mirror ^ (rng.random() < 0.25) else 1.0
    stride = rng.uniform(0.0, 0.08) * body

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        image[mask] = colour

    radius = person.head * body
    head_y = top + radius
    neck = top + 2 * radius
    waist = neck + person.torso * body
    feet = top + 0.97 * body
    shoulder = person.shoulders * body
    arm = 0.035 * body
    leg = person.leg * body
    # legs (trousers, or shorts over skin), splayed by the stride, then shoes
    depth = np.clip((ys - waist) / (feet - waist), 0, 1)
    for sign in (-1.0, 1.0):
        centre = cx + sign * (leg * 1.05 + stride * depth)
        limb = (np.abs(xs - centre) < leg) & (ys >= waist) & (ys < feet)
        if person.shorts:
            paint(limb & (depth >= 0.35), person.skin)
            paint(limb & (depth < 0.35), person.trousers)
        else:
            paint(limb, person.trousers)
        paint((np.abs(xs - centre) < leg * 1.2) & (ys >= feet) & (ys < top + body), person.shoes)
    # arms (sleeves) and hands
    for sign in (-1.0, 1.0):
        inner = cx + sign * shoulder
        sleeve = (np.abs(xs - (inner + sign * arm / 2)) < arm / 2) & (ys >= neck) & (ys < waist - 0.02 * body)
        paint(sleeve, person.shirt)
        paint(
            (np.abs(xs - (inner + sign * arm / 2)) < arm / 2)
            & (ys >= waist - 0.02 * body)
            & (ys < waist + 0.03 * body),
            person.skin,
        )
    # torso, narrowing towards the waist, with its pattern
    half = shoulder * (1 - 0.15 * np.clip((ys - neck) / (waist - neck), 0, 1))
    torso = (np.abs(xs - cx) < half) & (ys >= neck) & (ys < waist)
    paint(torso, person.shirt)
    period = person.period * body
    rows = ((ys - neck) // period) % 2 == 1
    cols = ((xs - cx) // period) % 2 == 1
    pattern = {PLAIN: None, H_STRIPES: rows & (xs > -1), V_STRIPES: cols & (ys > -1), CHECKS: rows ^ cols}
    if pattern[person.pattern] is not None:
        paint(torso & pattern[person.pattern], person.pattern_colour)
    # head, hair or hat
    head = ((xs - cx) / (0.85 * radius)) ** 2 + ((ys - head_y) / radius) ** 2 < 1
    paint(head, person.skin)
    if person.hat is not None:
        paint(head & (ys < head_y - 0.1 * radius), person.hat)
        paint(
            (np.abs(xs - cx - side * 0.4 * radius) < 1.2 * radius)
            & (np.abs(ys - head_y + 0.1 * radius) < 0.12 * radius),
            person.hat,
        )
    else:
        paint(head & (ys < head_y - 0.35 * radius), person.hair)
    # bag on one side, with a strap across the chest
    if person.bag is not None:
        near = cx + side * (shoulder + arm * 0.6)
        paint(
            (np.abs(xs - near - side * 0.045 * body) < 0.05 * body) & (np.abs(ys - waist) < 0.07 * body),
            person.bag,
        )
        slope = (2 * shoulder) / (waist - neck)
        strap = np.abs((xs - cx) - side * (slope * (ys - neck) - shoulder)) < 0.015 * body
        paint(strap & torso, person.bag * 0.7)
    light = camera.gain * camera.tint * rng.uniform(0.92, 1.08)
    noisy = image * light + rng.normal(0.0, 0.025, size=image.shape).astype(np.float32)
    return (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)


def image_name(pid: int, camid: int, index: int) -> str:
    """Market-style file name (pid from 1, camera number = camid + 1, index from 1)."""
    return f"{pid:04d}_c{camid + 1}s1_{index + 1:06d}_00.png"


def generate(out: Path, ids: int, cameras: int, images_per_camera: int, seed: int) -> list[Record]:
    """Render ``ids x cameras x images_per_camera`` PNG images into ``out``; return their records, sorted."""
    if ids < 2 or cameras < 2 or images_per_camera < 1:
        raise ReidxError(
            f"synthetic size {ids} ids x {cameras} cameras x {images_per_camera} images is too small",
            "use --ids >= 2, --cameras >= 2 and --images-per-camera >= 1",
        )
    out.mkdir(parents=True, exist_ok=True)
    views = [make_camera(seed, camid) for camid in range(cameras)]
    records = []
    with progress(transient=True) as bar:
        task = bar.add_task("generate synthetic", total=ids * cameras * images_per_camera)
        for pid in range(1, ids + 1):
            person = make_identity(seed, pid)
            for camid, camera in enumerate(views):
                for index in range(images_per_camera):
                    rng = np.random.default_rng([seed, _IMAGE, pid, camid, index])
                    path = out / image_name(pid, camid, index)
                    Image.fromarray(render(person, camera, rng)).save(path, compress_level=1)
                    records.append(Record(str(path), *parse_market_name(path)))  # camid = CAM of the name
                    bar.advance(task)
    return records


#: The generator's sizes where --ids, --cameras and --images-per-camera are not given.
DEFAULT_SIZES = {"ids": 100, "cameras": 4, "images_per_camera": 4}


def generator_sizes(options: Options) -> dict[str, int]:
    """The generator's size arguments: the options given, else :data:`DEFAULT_SIZES`."""
    given = {name: getattr(options, name) for name in DEFAULT_SIZES}
    return {name: DEFAULT_SIZES[name] if value is None else value for name, value in given.items()}


@register_dataset("synthetic")
class Synthetic(DatasetReader):
    """Procedural pedestrians, multi-shot, one trial; the HR originals are written to ``DIR/hr/``."""

    layout = "no folder: the images are generated (size from --ids, --cameras, --images-per-camera)"
    rule = f"half the ids test; {QUERY_RULE}"
    uses = frozenset({"test_ids", "query_camera", "ids", "cameras", "images_per_camera"})
    needs_root = False

    def read(self, root: Path | None, workdir: Path, options: Options) -> Source:
        if root is not None:
            raise ReidxError("the synthetic dataset is generated, it reads no --root", "drop --root")
        images = generate(workdir, **generator_sizes(options), seed=options.seed)
        return Source(root=workdir, images=images)

    def settings(self, options: Options) -> dict[str, Any]:
        """The generator's size arguments."""
        return {"generator": generator_sizes(options)}

    def split(self, source: Source, rng: np.random.Generator, options: Options) -> Split:
        ids = ids_of(source.images)
        n_test = held_out_count(len(ids), options.test_ids, len(ids) // 2)
        return per_camera_query_split(source.images, rng, n_test, options.query_camera)
