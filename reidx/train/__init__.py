"""Training: P×K sampling, the trainer with resumable checkpoints, DDP and validation.

Names are imported on first use, so ``reidx.train.config`` (the options) loads without torch; its
``TrainConfig`` imports the models (torch), whose own options it holds.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_HOMES = {
    "IdentityBatchSampler": "reidx.train.sampler",
    "LossWeights": "reidx.models.losses",
    "Objective": "reidx.models.losses",
    "TrainConfig": "reidx.train.config",
    "Trainer": "reidx.train.engine",
    "batch_hard_triplet": "reidx.models.losses",
    "build_config": "reidx.train.config",
    "pretrained_option": "reidx.train.config",
    "print_summary": "reidx.train.run",
    "run_training": "reidx.train.run",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'reidx.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
