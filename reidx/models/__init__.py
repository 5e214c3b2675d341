"""Model registry: ``build_model(name, **kwargs)``, ``list_models()``, ``model_options(name)``.

Each model lives in its own module of this package and registers itself with ``@register_model``; every
module here is imported below, so adding a model is one file.
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
from reidx.registry import import_package_modules

import_package_modules(__name__, __path__)

from reidx.models.baseline import Baseline  # noqa: E402 - after the registration above, for the names
from reidx.models.cadnet import CADNet  # noqa: E402

__all__ = [
    "Baseline",
    "CADNet",
    "ReidModel",
    "build_model",
    "complete_config",
    "list_models",
    "model_class",
    "model_options",
    "register_model",
]
