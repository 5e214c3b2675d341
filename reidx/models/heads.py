"""Shared heads: the identity classifier C and the embedding normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IdentityClassifier(nn.Module):
    """C [G]: BatchNorm1d on the pooled feature, then a bias-free linear layer to the training identities."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.fc = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(pooled))


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """GAP over the spatial dimensions: (B, C, h, w) → (B, C)."""
    return feature_map.mean(dim=(2, 3))


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation (the retrieval embedding; similarity is the inner product)."""
    return F.normalize(vectors, dim=1)
