"""Model registry: ``build_model(name, **kwargs)``, ``list_models()``, ``model_options(name)``.

Each model lives in its own module of this package and registers itself with ``@register_model``; the
registry imports every module here on its first lookup, so adding a model is one file.
"""

from __future__ import annotations

from reidx.models.base import (
    ReidModel,
    build_model,
    complete_config,
    list_models,
    model_class,
    model_options,
    register_model,
)

__all__ = [
    "ReidModel",
    "build_model",
    "complete_config",
    "list_models",
    "model_class",
    "model_options",
    "register_model",
]
