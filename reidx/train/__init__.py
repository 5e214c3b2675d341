"""Training: P×K sampling, the trainer with resumable checkpoints, DDP and validation.

Names are imported on first use, so ``reidx.train.config`` (the options) loads without torch; its
``TrainConfig`` imports the models (torch), whose own options it holds.
"""

from __future__ import annotations

from reidx.lazy import lazy_exports

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
__getattr__ = lazy_exports(__name__, _HOMES)
