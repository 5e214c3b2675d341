"""The interface every re-ID model offers (what the trainer, losses, retrieval and report rely on) and the
model registry: ``@register_model("name")`` on the class, in the model's own module of this package (imported
on the registry's first lookup). A model's module holds all of it: the network, its loss recipe
(:meth:`ReidModel.objective`) and the constructor options of a tiny instance for the tests (``tiny``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from reidx.models.backbones import Backbone, Pretrained, WeightsLoad
from reidx.models.losses import LossWeights, Objective
from reidx.registry import Registry

#: model-config keys that checkpoints written before they existed lack, and what those files meant
LEGACY_CONFIG = {"input_norm": "none", "bnneck": False, "last_stride": 2}

M = TypeVar("M", bound=type["ReidModel"])


@dataclass
class NoOptions:
    """A model without options of its own."""


_MODELS: Registry[type[ReidModel]] = Registry("model", "reidx.models")


class ReidModel(nn.Module):
    """A re-ID network built from a ``config`` dict (``build_model(**config)`` rebuilds it).

    Models with ``can_recover`` also have ``feature_discriminator`` (D_F, on f) and ``image_discriminator``
    (D_I, on images), which the adversarial losses call.
    """

    #: the registered name (stamped by :func:`register_model`), saved as ``config["name"]``
    name: ClassVar[str] = ""
    embedding_modes: tuple[str, ...] = ("fused",)
    can_recover: bool = False
    #: constructor options (beside ``num_classes`` and ``arch``) of a small, fast instance, for the tests
    tiny: ClassVar[dict[str, Any]] = {}
    #: the model's own ``reidx train`` options (:func:`reidx.options.option` fields; flag, TOML and config.json
    #: key = field name), beside the common ones; those named like a constructor parameter are passed to it,
    #: the others are for its :meth:`objective`
    Options: ClassVar[type] = NoOptions
    #: Trunk attribute -> its name in messages (the attribute itself when absent).
    trunk_names: ClassVar[dict[str, str]] = {}
    config: dict[str, Any]
    feature_discriminator: nn.Module
    image_discriminator: nn.Module

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors its :meth:`objective` needs: at least f (E's last map), pooled (what C and the triplet
        see), logits and embedding (L2-normalised, as ``embed(x, "fused")``)."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor, mode: str = "fused") -> torch.Tensor:
        """The L2-normalised retrieval embedding of ``x`` for one of ``embedding_modes``."""
        raise NotImplementedError

    def recover(self, x: torch.Tensor) -> torch.Tensor:
        """The recovered HR image in [-1, 1] (models with ``can_recover``)."""
        raise NotImplementedError(f"{type(self).__name__} does not recover images")

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator-side optimiser trains (everything but the discriminators)."""
        raise NotImplementedError

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """What the discriminator-side optimiser trains (none for models without discriminators)."""
        return []

    def objective(self, config: Any) -> Objective:
        """The loss recipe a training step runs, weighted from a :class:`reidx.train.config.TrainConfig`
        (here L_cls: identity CE + batch-hard triplet)."""
        return Objective(self, LossWeights.from_config(config))

    def imagenet_loads(self) -> dict[str, WeightsLoad]:
        """Trunk name -> what that ImageNet-initialised trunk took from its weights file (empty from scratch)."""
        return {
            self.trunk_names.get(name, name): m.imagenet
            for name, m in self.named_modules()
            if isinstance(m, Backbone) and m.imagenet is not None
        }


def resolve_input_norm(input_norm: str | None, pretrained: Pretrained) -> str:
    """``input_norm`` as given, or (None) ``imagenet`` for ImageNet-initialised trunks and ``none`` otherwise."""
    if input_norm is None:
        return "imagenet" if pretrained else "none"
    return input_norm


def register_model(name: str) -> Callable[[M], M]:
    """Register a :class:`ReidModel` class as ``name``, stamped as its ``name`` (a class decorator)."""

    def register(cls: M) -> M:
        if not issubclass(cls, ReidModel):
            raise TypeError(f"{cls.__name__} is not a ReidModel")
        return _MODELS.register(name)(cls)

    return register


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (and ``--model``)."""
    return _MODELS.names()


def model_class(name: str) -> type[ReidModel]:
    """The registered class ``name`` (its ``embedding_modes`` and ``can_recover`` without building it)."""
    return _MODELS.get(name)


def model_options(name: str) -> dict[str, Any]:
    """The keyword options the builder of ``name`` accepts, with their defaults (``inspect.Parameter.empty``
    for required ones): pass a model only the options it takes."""
    parameters = inspect.signature(model_class(name).__init__).parameters
    return {key: p.default for key, p in parameters.items() if key != "self"}


def build_model(name: str, **kwargs: Any) -> ReidModel:
    """Instantiate the registered model ``name``; ``kwargs`` go to its constructor."""
    return model_class(name)(**kwargs)


def complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved model config with the keys that older checkpoints lack set to what those files meant."""
    return {**LEGACY_CONFIG, **config}
