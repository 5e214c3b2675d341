"""The models' forward pass carries the same retrieval embedding that `embed` returns."""

from __future__ import annotations

import pytest
import torch

from reidx.models import build_model


@pytest.mark.parametrize("name", ["cadnet", "baseline"])
def test_forward_embedding_is_the_fused_retrieval_embedding(name: str) -> None:
    """Validation ranks with ``forward()["embedding"]``; search and report with ``embed()``: they must agree."""
    torch.manual_seed(0)
    extra = {"discriminator_width": 8} if name == "cadnet" else {}
    model = build_model(name, num_classes=5, arch="resnet18", **extra).eval()
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        embedding = model(images)["embedding"]
    assert torch.allclose(embedding, model.embed(images, "fused"), atol=1e-6)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)
