"""Embedders: what the embedding loop drives. One batch of model-input images in, L2-normalised vectors out.

:class:`TorchEmbedder` runs a network (a checkpoint's, or the trainer's own); other runtimes register an opener
for their model files' suffix in :data:`OPENERS` (``reidx.export.runtime``: ``.onnx`` files, run by
onnxruntime), and :func:`open_embedder` picks by suffix. All say which embeddings they make (model, checkpoint
SHA-256, mode, input size): two embedders with the same :meth:`Embedder.fingerprint` give comparable vectors.
This module imports torch only to run a network, so a query with an ONNX file never imports it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from reidx.checkpoint import LoadedModel
from reidx.device import AUTO, Devices
from reidx.errors import ReidxError
from reidx.registry import Registry

if TYPE_CHECKING:
    import torch

    from reidx.models import ReidModel


class Embedder(ABC):
    """Images (N×3×H×W in [-1, 1], H×W = ``input_size``) to float32 (N, D) L2-normalised rows.

    ``checkpoint_sha256`` and ``source`` are None for a network that is not read from a file (validation).
    """

    model_name: str
    mode: str
    input_size: tuple[int, int]
    checkpoint_sha256: str | None
    source: Path | None
    #: what runs the network, for messages and benchmarks
    runtime: str
    #: whether :meth:`embed_batch` takes numpy batches (the loop then decodes without torch) or torch tensors
    takes_numpy: ClassVar[bool] = False

    @abstractmethod
    def embed_batch(self, images: Any) -> np.ndarray:
        """The embeddings of one batch (a torch tensor, or a numpy array when :attr:`takes_numpy`), in order."""

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the network runs, in words (``cpu``, ``cuda:0``, ...)."""

    def fingerprint(self) -> dict[str, Any]:
        """What makes two embeddings comparable: the checkpoint's bytes, the mode and the input size."""
        if self.checkpoint_sha256 is None:
            raise ValueError("an embedder without a checkpoint has no fingerprint")
        return fingerprint_of(self.checkpoint_sha256, self.mode, self.input_size)


@dataclass
class TorchEmbedder(Embedder):
    """``model.embed(images, mode)`` in torch, on the device the model is on."""

    model: ReidModel
    input_size: tuple[int, int]
    mode: str = "fused"
    checkpoint_sha256: str | None = None
    source: Path | None = None
    runtime = "torch"

    @property
    def model_name(self) -> str:  # type: ignore[override]
        return self.model.config["name"]

    @classmethod
    def of(cls, loaded: LoadedModel, mode: str = "fused") -> TorchEmbedder:
        """The embedder of a loaded checkpoint; a mode the model does not have is refused."""
        check_mode(loaded, mode)
        return cls(loaded.model, tuple(loaded.input_size), mode, loaded.fingerprint, loaded.path)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def embed_batch(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            batch = torch.as_tensor(images).to(device, non_blocking=True)
            return self.model.embed(batch, self.mode).float().cpu().numpy()


def fingerprint_of(checkpoint_sha256: str, mode: str, input_size: tuple[int, int]) -> dict[str, Any]:
    """The embedding fingerprint: what makes two embeddings comparable."""
    return {"checkpoint_sha256": checkpoint_sha256, "mode": mode, "input_size": list(input_size)}


def check_mode(loaded: LoadedModel, mode: str) -> None:
    """Refuse an embedding mode the model does not have."""
    modes = loaded.model.embedding_modes
    if mode not in modes:
        raise ReidxError(f"the {loaded.name} model has no {mode!r} embedding", f"use --mode {' or '.join(modes)}")


def as_embedder(model: LoadedModel | Embedder, mode: str | None = None) -> Embedder:
    """``model`` as an embedder of ``mode``: a loaded checkpoint in torch (``mode`` None: fused), or an
    embedder as it is (its mode must be ``mode`` when one is given)."""
    if isinstance(model, LoadedModel):
        return TorchEmbedder.of(model, mode or "fused")
    if mode is not None and mode != model.mode:
        raise ReidxError(
            f"{model.source} makes {model.mode!r} embeddings, not {mode!r}",
            f"export the checkpoint again with `reidx export --mode {mode}`, or drop --mode",
        )
    return model


#: ``opener(path, mode, devices, device, images)``: the embedder of one model file (``images``: how many images it
#: will embed, when known: a runtime may then skip start-up work that pays for itself only over many).
Opener = Callable[[Path, "str | None", Devices, "torch.device | None", "int | None"], Embedder]
#: Model files of these suffixes are checkpoints, opened in torch without looking at :data:`OPENERS`.
CHECKPOINT_SUFFIXES = (".pt", ".pth")
#: Model file suffix (lower case, with the dot) -> its opener; any other file is read as a checkpoint. The module
#: that registers them (it imports this one, never the reverse) is imported when a file of another suffix is first
#: opened, as gallery backends are.
OPENERS: Registry[Opener] = Registry("model file type", "reidx.export.runtime")


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether :func:`open_embedder` reads ``path`` as a checkpoint (no opener claims its suffix)."""
    suffix = Path(path).suffix.lower()
    return suffix in CHECKPOINT_SUFFIXES or suffix not in OPENERS.names()


def open_embedder(
    path: str | os.PathLike,
    mode: str | None = None,
    devices: Devices = AUTO,
    device: torch.device | None = None,
    images: int | None = None,
) -> Embedder:
    """The embedder of a model file, by its suffix: an opener's from :data:`OPENERS` (``.onnx``: onnxruntime),
    else a checkpoint in torch (on ``device``, default ``devices.torch``; ``mode`` None: fused). ``images``: how
    many images it will embed, when known (a few queries: see :data:`Opener`)."""
    path = Path(path)
    if not is_checkpoint(path):
        return OPENERS.get(path.suffix.lower())(path, mode, devices, device, images)
    from reidx.models.loading import load_model  # here: the models (and torch) only for a checkpoint

    return TorchEmbedder.of(load_model(path, device or devices.torch), mode or "fused")
