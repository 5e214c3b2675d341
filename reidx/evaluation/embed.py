"""The one embedding loop: images decoded in DataLoader workers while the model runs, L2-normalised vectors out.

``embed``, ``search``, ``report`` and the trainer's validation all embed through :func:`iter_embeddings`, so
an image is turned into a vector the same way everywhere. The embedding mode is checked once, by the entry
functions (:func:`embed_paths` here, ``embed_to_chunks`` in retrieval); the loop trusts its caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from reidx.checkpoint import LoadedModel
from reidx.console import progress
from reidx.data.loading import iterate_images
from reidx.data.transforms import to_model_input
from reidx.errors import ReidxError
from reidx.models import ReidModel


def check_mode(loaded: LoadedModel, mode: str) -> None:
    """Refuse an embedding mode the model does not have."""
    modes = loaded.model.embedding_modes
    if mode not in modes:
        raise ReidxError(f"the {loaded.name} model has no {mode!r} embedding", f"use --mode {' or '.join(modes)}")


@torch.no_grad()
def iter_embeddings(
    model: ReidModel,
    paths: Sequence[str],
    size: tuple[int, int],
    mode: str = "fused",
    *,
    rates: Sequence[int] | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Iterator[np.ndarray]:
    """Float32 ``model.embed`` vectors batch by batch, in path order, each image resized to ``size`` (image i
    first down-sampled by ``rates[i]`` when given); a bad image raises ReidxError naming it."""
    for images, _ in iterate_images(paths, size, batch_size, workers, rates):
        yield embed_batch(model, images, mode)


@torch.no_grad()
def embed_batch(model: ReidModel, images: torch.Tensor, mode: str = "fused") -> np.ndarray:
    """Float32 ``model.embed`` vectors of one batch of model inputs (:func:`reidx.data.transforms.to_model_input`)."""
    device = next(model.parameters()).device
    return model.embed(images.to(device, non_blocking=True), mode).float().cpu().numpy()


def embed_images(loaded: LoadedModel, images: Sequence[Image.Image], mode: str = "fused") -> np.ndarray:
    """The (N, D) float32 embeddings of decoded images (``reidx serve``'s uploads), prepared exactly as files."""
    check_mode(loaded, mode)
    if not images:
        raise ReidxError("no images to embed", "give at least one image")
    return embed_batch(loaded.model, torch.stack([to_model_input(image, loaded.input_size) for image in images]), mode)


def embed_paths(
    loaded: LoadedModel, paths: Sequence[str], mode: str = "fused", batch_size: int = 64, workers: int = 2
) -> np.ndarray:
    """The (N, D) float32 embeddings of ``paths`` (rows L2-normalised, in path order)."""
    check_mode(loaded, mode)
    if not paths:
        raise ReidxError("no images to embed", "give at least one image")
    with progress_counter(len(paths), 0, "embedding", show=len(paths) > batch_size) as advance:
        batches = []
        for vectors in iter_embeddings(
            loaded.model, paths, loaded.input_size, mode, batch_size=batch_size, workers=workers
        ):
            batches.append(vectors)
            advance(len(vectors))
    return np.concatenate(batches)


@contextlib.contextmanager
def progress_counter(total: int, done: int, description: str, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (when ``show``), yielded as an ``advance(n)`` function."""
    if not show:
        yield lambda n: None
        return
    with progress(transient=True) as bar:
        task = bar.add_task(description, total=total, completed=done)
        yield lambda n: bar.advance(task, n)
