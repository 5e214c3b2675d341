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


def test_residual_recovery_starts_as_the_input_and_is_saved_in_the_config() -> None:
    """With ``residual_recovery`` G's correction starts at zero: the untrained recovery IS the input."""
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=5, arch="resnet18", discriminator_width=8, residual_recovery=True).eval()
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    assert torch.equal(model.recover(images), images)
    assert torch.equal(model(images)["recovered"], images)
    assert model.config["residual_recovery"] is True
    plain = build_model("cadnet", num_classes=5, arch="resnet18", discriminator_width=8).eval()
    assert not torch.allclose(plain.recover(images), images, atol=0.1)


@pytest.mark.parametrize("size", [(64, 32), (128, 48), (70, 30)])
def test_cadnet_recovers_at_any_input_size(size: tuple[int, int]) -> None:
    """Sides that are not multiples of 32 (VIPeR's native 128×48) still give an image of the input's size."""
    model = build_model("cadnet", num_classes=5, arch="resnet18", discriminator_width=8).eval()
    images = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        out = model(images)
    assert out["recovered"].shape == images.shape
    assert model.embed(images, "fused").shape == (2, 2 * 512)
