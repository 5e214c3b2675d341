"""Batched, parallel image decoding for inference (embed, search, report, recover, validation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from reidx.data.transforms import DEFAULT_INPUT_SIZE, downsample, to_model_input
from reidx.errors import ReidxError
from reidx.images import load_image


class ImageListDataset(Dataset):
    """Images from a list of paths, each resized to the model input size (bilinear), in [-1, 1]; with
    ``rates``, image i is first down-sampled by ``rates[i]`` (1 = as read)."""

    def __init__(
        self, paths: Sequence[str], size: tuple[int, int] = DEFAULT_INPUT_SIZE, rates: Sequence[int] | None = None
    ) -> None:
        self.paths = list(paths)
        self.size = size
        self.rates = None if rates is None else [int(rate) for rate in rates]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str, str]:
        """``(image, index, error, fix)``: a bad file yields a blank image and its one-line error, which
        :func:`iterate_images` raises in the main process (worker tracebacks never reach the user)."""
        try:
            image = load_image(self.paths[index])
            if self.rates is not None:
                image = downsample(image, self.rates[index])
            return to_model_input(image, self.size), index, "", ""
        except ReidxError as exc:
            return torch.zeros(3, *self.size), index, exc.message, exc.fix or ""


def image_loader(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
    rates: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over ``paths`` in order, yielding ``(images, indices, errors)``; decoding runs in
    workers. Prefer :func:`iterate_images`, which checks the errors."""
    workers = min(workers, max(0, len(paths) // batch_size))
    return DataLoader(
        ImageListDataset(paths, size, rates),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def iterate_images(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
    rates: Sequence[int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, indices)`` batches in path order (image i down-sampled by ``rates[i]`` when given);
    the first unreadable image raises ReidxError."""
    for images, indices, errors, fixes in image_loader(paths, size, batch_size, workers, rates):
        bad = next((i for i, error in enumerate(errors) if error), None)
        if bad is not None:
            raise ReidxError(errors[bad], fixes[bad] or None)
        yield images, indices
