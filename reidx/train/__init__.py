"""Training: P×K sampling, CAD-Net's losses, the trainer with resumable checkpoints, DDP and validation."""

from reidx.train.config import TrainConfig, build_config, pretrained_option
from reidx.train.engine import Trainer, print_summary, run_training
from reidx.train.losses import LossWeights, Objective, batch_hard_triplet
from reidx.train.sampler import IdentityBatchSampler

__all__ = [
    "IdentityBatchSampler",
    "LossWeights",
    "Objective",
    "TrainConfig",
    "Trainer",
    "batch_hard_triplet",
    "build_config",
    "pretrained_option",
    "print_summary",
    "run_training",
]
