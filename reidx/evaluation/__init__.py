"""Inference for evaluation: one embedding loop and one recovery-scoring path, shared by ``embed``, ``search``,
``report``, ``recover`` and the trainer's validation. The metrics themselves live in :mod:`reidx.metrics`."""

from reidx.evaluation.embed import check_mode, embed_paths, iter_embeddings
from reidx.evaluation.recovery import BILINEAR, MODEL, RecoveryBatch, RecoveryScores, recover_batches, score_recovery

__all__ = [
    "BILINEAR",
    "MODEL",
    "RecoveryBatch",
    "RecoveryScores",
    "check_mode",
    "embed_paths",
    "iter_embeddings",
    "recover_batches",
    "score_recovery",
]
