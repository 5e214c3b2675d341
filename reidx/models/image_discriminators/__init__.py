"""D_I kinds (``--image-discriminator``): judges of images, real HR vs recovered, one logit per image or patch.

Each kind is an ``nn.Module`` class built as ``kind(width=...)``, registered with
``@register_image_discriminator("name")`` in its own module of this package (imported on the registry's first
lookup): a new kind is one file.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from reidx.registry import Registry

_KINDS: Registry[type[nn.Module]] = Registry("image discriminator", __name__)


def register_image_discriminator(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a D_I class as ``name``, stamped as its ``name`` (a class decorator)."""
    return _KINDS.register(name)


def list_image_discriminators() -> list[str]:
    """Names accepted by :func:`build_image_discriminator` (and ``--image-discriminator``)."""
    return _KINDS.names()


def build_image_discriminator(kind: str, width: int = 32) -> nn.Module:
    """The D_I ``kind`` at base ``width`` (kinds without a width ignore it)."""
    return _KINDS.get(kind)(width=width)
