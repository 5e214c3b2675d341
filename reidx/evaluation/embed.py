"""The one embedding loop: images decoded in parallel while the model runs, L2-normalised vectors out.

``embed``, ``search``, ``report`` and the trainer's validation all embed through :func:`iter_embeddings`, so
an image is turned into a vector the same way everywhere, whatever runs the network (an
:class:`~reidx.evaluation.embedders.Embedder`: torch, decoding in DataLoader workers, or onnxruntime, decoding
in threads into numpy batches: that path never imports torch). The embedding mode is checked once, when
the embedder is made (by the entry functions: :func:`embed_paths` here, ``build_index`` in retrieval).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from reidx.checkpoint import LoadedModel
from reidx.console import progress
from reidx.data.loading import iterate_images
from reidx.data.transforms import model_input_array
from reidx.errors import ReidxError
from reidx.evaluation.embedders import Embedder, as_embedder


def iter_embeddings(
    embedder: Embedder,
    paths: Sequence[str],
    *,
    rates: Sequence[int] | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Iterator[np.ndarray]:
    """Float32 vectors of ``embedder`` batch by batch, in path order, each image resized to its input size
    (image i first down-sampled by ``rates[i]`` when given); a bad image raises ReidxError naming it."""
    batches = iterate_images(paths, embedder.input_size, batch_size, workers, rates, numpy=embedder.takes_numpy)
    for images, _ in batches:
        yield embedder.embed_batch(images)


def embed_images(model: LoadedModel | Embedder, images: Sequence[Image.Image], mode: str | None = None) -> np.ndarray:
    """The (N, D) float32 embeddings of decoded images (``reidx serve``'s uploads), prepared exactly as files,
    by a loaded checkpoint in ``mode`` (default fused) or an embedder."""
    embedder = as_embedder(model, mode)
    if not images:
        raise ReidxError("no images to embed", "give at least one image")
    return embedder.embed_batch(np.stack([model_input_array(image, embedder.input_size) for image in images]))


def embed_paths(
    model: LoadedModel | Embedder,
    paths: Sequence[str],
    mode: str | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> np.ndarray:
    """The (N, D) float32 embeddings of ``paths`` (rows L2-normalised, in path order) by a loaded checkpoint
    in ``mode`` (default fused) or by an embedder (:func:`reidx.evaluation.embedders.as_embedder`)."""
    embedder = as_embedder(model, mode)
    if not paths:
        raise ReidxError("no images to embed", "give at least one image")
    with progress_counter(len(paths), 0, "embedding", show=len(paths) > batch_size) as advance:
        batches = []
        for vectors in iter_embeddings(embedder, paths, batch_size=batch_size, workers=workers):
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
