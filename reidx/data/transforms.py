"""Image geometry of protocols.md §1: LR synthesis and the model-input transform."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from reidx.errors import ReidxError

if TYPE_CHECKING:
    import torch

#: Default model input size (H, W) [L]: 256×128 as in the RAIN code.
DEFAULT_INPUT_SIZE: tuple[int, int] = (256, 128)
#: Pixel normalisation [L]: mean = std = 0.5, so inputs lie in [-1, 1] like G's Tanh output.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


def lr_size(height: int, width: int, rate: int) -> tuple[int, int]:
    """(H, W) of an image down-sampled by ``rate``: round(native / r), at least 1 pixel."""
    return max(1, round(height / rate)), max(1, round(width / rate))


def downsample(image: Image.Image, rate: int) -> Image.Image:
    """LR(x, r): PIL bicubic (antialiased) resize to 1/r of the native size; r = 1 returns ``image``."""
    if rate < 1:
        raise ReidxError(f"down-sampling rate {rate} is not a positive integer", "use rates such as 2,3,4")
    if rate == 1:
        return image
    height, width = lr_size(image.height, image.width, rate)
    return image.resize((width, height), Image.BICUBIC)


def model_input_array(image: Image.Image, size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Bilinear resize to ``size`` (H, W) and normalise to a float32 array (3, H, W) in [-1, 1] (numpy, so an
    ONNX query decodes without torch)."""
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return (np.ascontiguousarray(array.transpose(2, 0, 1)) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)


def to_model_input(image: Image.Image, size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> torch.Tensor:
    """:func:`model_input_array` as a torch tensor (3, H, W)."""
    import torch  # here, so that `reidx prepare` (which only down-samples) runs without torch

    return torch.from_numpy(model_input_array(image, size))


def to_unit_range(tensor: torch.Tensor) -> torch.Tensor:
    """Map a model-space tensor in [-1, 1] back to pixel range [0, 1] (clamped)."""
    return (tensor * PIXEL_STD + PIXEL_MEAN).clamp(0.0, 1.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) model-space tensor as an 8-bit RGB PIL image."""
    array = (to_unit_range(tensor.detach().cpu()).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)
