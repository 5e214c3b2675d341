"""Inference for evaluation: one embedding loop (:mod:`.embed`) and one recovery-scoring path (:mod:`.recovery`),
shared by ``embed``, ``search``, ``serve``, ``report``, ``recover`` and the trainer's validation. The metrics
themselves live in :mod:`reidx.metrics`. Import from the submodules: ``search`` and ``serve`` need only the
embedding loop, not the recovery metrics (torchmetrics), so this package imports neither eagerly.
"""
