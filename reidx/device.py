"""``--device auto|cpu|cuda`` resolved once into :class:`Devices`: torch's device and whether FAISS uses GPUs.

Resolution is lazy (each side on first use), so ``reidx --help`` and path errors never import torch or FAISS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from reidx.errors import ReidxError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform has one, else every CPU)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Devices:
    """Where models run (``.torch``) and whether FAISS indexes go to the GPUs (``.faiss_gpu``).

    ``auto``: CUDA / FAISS GPUs when available, else CPU; ``cuda``: a GPU is required (an error without one);
    ``cpu``: CPU for both.
    """

    name: str = "auto"

    def __post_init__(self) -> None:
        if self.name not in DEVICE_CHOICES:
            raise ReidxError(f"unknown device {self.name!r}", f"use one of {', '.join(DEVICE_CHOICES)}")

    @cached_property
    def torch(self) -> torch.device:
        """The torch device: CUDA when asked for or (``auto``) available, else CPU."""
        import torch

        if self.name == "cuda" and not torch.cuda.is_available():
            raise ReidxError("--device cuda was asked for but torch sees no GPU", "use --device cpu or auto")
        cuda = self.name == "cuda" or (self.name == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if cuda else "cpu")

    @cached_property
    def faiss_gpu(self) -> bool:
        """True when FAISS indexes are cloned to the GPUs FAISS sees."""
        if self.name == "cpu":
            return False
        import faiss

        gpus = faiss.get_num_gpus()
        if self.name == "cuda" and gpus == 0:
            raise ReidxError(
                "--device cuda was asked for but FAISS sees no GPU", "install faiss-gpu or use --device cpu"
            )
        return gpus > 0


#: The default: GPUs when present.
AUTO = Devices("auto")
