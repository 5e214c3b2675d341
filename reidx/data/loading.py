"""Batched, parallel image decoding for inference (embed, report, recover)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from reidx.data.transforms import DEFAULT_INPUT_SIZE, to_model_input
from reidx.errors import ReidxError
from reidx.images import load_image


class ImageListDataset(Dataset):
    """Images from a list of paths, each resized to the model input size (bilinear), in [-1, 1]."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        """``(image, index, error)``: a bad file yields a blank image and its one-line error, which
        :func:`iterate_images` raises in the main process (worker tracebacks never reach the user)."""
        try:
            return to_model_input(load_image(self.paths[index]), self.size), index, ""
        except ReidxError as exc:
            return torch.zeros(3, *self.size), index, exc.line()


def image_loader(
    paths: Sequence[str],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    batch_size: int = 64,
    workers: int = 2,
) -> DataLoader:
    """A DataLoader over ``paths`` in order, yielding ``(images, indices, errors)``; decoding runs in
    workers. Prefer :func:`iterate_images`, which checks the errors."""
    workers = min(workers, max(0, len(paths) // batch_size))
    return DataLoader(
        ImageListDataset(paths, size),
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
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, indices)`` batches in path order; the first unreadable image raises ReidxError."""
    for images, indices, errors in image_loader(paths, size, batch_size, workers):
        bad = next((error for error in errors if error), None)
        if bad:
            raise ReidxError(bad)
        yield images, indices
