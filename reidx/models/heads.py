"""Shared heads: the identity classifier C and the embedding normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IdentityClassifier(nn.Module):
    """C [G]: BatchNorm1d on the pooled feature, then a bias-free linear layer to the training identities
    (the triplet sees the pooled feature before the BN: Luo et al.'s BNNeck, whose retrieval feature is the
    one after the BN, :meth:`neck`)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.fc = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity logits and the BN feature they come from (one BN pass, so its statistics move once)."""
        normed = self.bn(pooled)
        return self.fc(normed), normed

    def neck(self, pooled: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The BN-neck feature of ``pooled``, channels ``start`` onwards of the BN's, with its running statistics
        (inference: the batch's own statistics are never used, and nothing is updated)."""
        end = start + pooled.shape[1]
        bn = self.bn
        return F.batch_norm(
            pooled,
            bn.running_mean[start:end],
            bn.running_var[start:end],
            bn.weight[start:end],
            bn.bias[start:end],
            training=False,
            eps=bn.eps,
        )


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """GAP over the spatial dimensions: (B, C, h, w) → (B, C)."""
    return feature_map.mean(dim=(2, 3))


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation (the retrieval embedding; similarity is the inner product)."""
    return F.normalize(vectors, dim=1)
