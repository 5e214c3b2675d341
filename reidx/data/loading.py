"""Batched, parallel image decoding for inference (embed, search, report, recover, validation): in torch
DataLoader workers into torch batches, or (``numpy=True``, for onnxruntime) in threads into numpy batches
without importing torch. Either way each image goes through :class:`ImageListDataset`."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from reidx.data.transforms import DEFAULT_INPUT_SIZE, downsample, model_input_array
from reidx.errors import ReidxError
from reidx.images import load_image

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

Item = tuple[np.ndarray, int, str, str]


class ImageListDataset:
    """Images from a list of paths, each resized to the model input size (bilinear), in [-1, 1]; with
    ``rates``, image i is first down-sampled by ``rates[i]`` (1 = as read). A map-style dataset for torch's
    DataLoader (which batches its numpy items into tensors) and for :func:`iterate_images`' threads."""

    def __init__(
        self, paths: Sequence[str], size: tuple[int, int] = DEFAULT_INPUT_SIZE, rates: Sequence[int] | None = None
    ) -> None:
        self.paths = list(paths)
        self.size = size
        self.rates = None if rates is None else [int(rate) for rate in rates]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        """``(image, index, error, fix)``: a bad file yields a blank image and its one-line error, which
        :func:`iterate_images` raises in the main process (worker tracebacks never reach the user)."""
        try:
            image = load_image(self.paths[index])
            if self.rates is not None:
                image = downsample(image, self.rates[index])
            return model_input_array(image, self.size), index, "", ""
        except ReidxError as exc:
            return np.zeros((3, *self.size), np.float32), index, exc.message, exc.fix or ""


def image_loader(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
    rates: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over ``paths`` in order, yielding ``(images, indices, errors, fixes)``; decoding runs in
    workers. Prefer :func:`iterate_images`, which checks the errors."""
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        ImageListDataset(paths, size, rates),
        batch_size=batch_size,
        shuffle=False,
        num_workers=worker_count(paths, batch_size, workers),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def numpy_batches(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
    rates: Sequence[int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str], list[str]]]:
    """:func:`image_loader`'s batches as numpy arrays, decoded by ``workers`` threads (PIL decodes and resizes
    without the GIL), the next batch decoding while the caller uses this one."""
    dataset = ImageListDataset(paths, size, rates)
    starts = range(0, len(dataset), batch_size)

    def batch(start: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        items: list[Item] = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images, indices, errors, fixes = zip(*items, strict=True)
        return np.stack(images), np.array(indices), list(errors), list(fixes)

    threads = worker_count(paths, batch_size, workers)
    if threads == 0:
        yield from map(batch, starts)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future] = deque()
        for start in starts:
            pending.append(pool.submit(batch, start))
            if len(pending) > threads:  # at most ``threads`` batches decoded ahead, as DataLoader workers
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def worker_count(paths: Sequence[str], batch_size: int, workers: int) -> int:
    """Decoding workers for ``paths``: none for a single batch (starting workers costs more than it saves)."""
    return min(workers, max(0, len(paths) // batch_size))


def iterate_images(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
    rates: Sequence[int] | None = None,
    numpy: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(images, indices)`` batches in path order (image i down-sampled by ``rates[i]`` when given), as
    torch tensors (decoded in DataLoader workers) or, with ``numpy``, numpy arrays (decoded in threads, torch
    never imported); the first unreadable image raises ReidxError."""
    batches = numpy_batches if numpy else image_loader
    for images, indices, errors, fixes in batches(paths, size, batch_size, workers, rates):
        bad = next((i for i, error in enumerate(errors) if error), None)
        if bad is not None:
            raise ReidxError(errors[bad], fixes[bad] or None)
        yield images, indices
