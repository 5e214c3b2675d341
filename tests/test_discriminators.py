"""The discriminator step learns: D_F tells HR features from LR ones that differ the way blur makes them differ."""

from __future__ import annotations

import torch

from reidx.models import build_model
from reidx.models.cadnet import CADNetObjective, CADNetWeights
from reidx.models.losses import DISCRIMINATOR
from reidx.train import TrainConfig

FEATURE_SHAPE = (512, 2, 1)  # E's output for resnet18 at 64×32
BATCH, STEPS = 16, 150


def blurred_pair(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HR = 1.25·relu(z), LR = relu(z): the same post-ReLU statistics, HR scaled up per channel by the
    ratio measured between E(x_H) and E(x_L) of an untrained resnet18 on MLR-VIPeR (1.2–1.6)."""
    hr = torch.randn(n, *FEATURE_SHAPE, generator=generator).relu() * 1.25
    lr = torch.randn(n, *FEATURE_SHAPE, generator=generator).relu()
    return hr, lr


def test_feature_discriminator_learns_a_resolution_gap_that_lives_in_channel_moments() -> None:
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=2, arch="resnet18", discriminator_width=8)
    config = TrainConfig()
    objective = model.objective(config)  # λ_adv^{D_F} 0.01 scales D_F's own loss, as in training
    optimiser = torch.optim.Adam(model.discriminator_parameters(), lr=config.d_lr, betas=config.d_betas)
    generator = torch.Generator().manual_seed(1)
    accuracies = []
    for _ in range(STEPS):
        f_h, f_l = blurred_pair(generator, BATCH)
        terms = objective(DISCRIMINATOR, {"f_h": f_h, "f_l": f_l})
        assert set(terms) == {"d_feature", "acc_d_feature", "total"}
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        accuracies.append(float(terms["acc_d_feature"]))
    assert sum(accuracies[:10]) / 10 < 0.75, "D_F was right before it learned anything"
    assert sum(accuracies[-50:]) / 50 > 0.9, f"D_F stayed near chance on its own batches: {accuracies[-50:]}"
    discriminator = model.feature_discriminator.eval()
    with torch.no_grad():
        f_h, f_l = blurred_pair(generator, 256)
        held_out = 0.5 * float((discriminator(f_h) > 0).float().mean() + (discriminator(f_l) <= 0).float().mean())
    assert held_out > 0.9, f"D_F learned its batches but not the gap: {held_out:.3f} on fresh features"


def test_accuracies_stay_out_of_the_weighted_total() -> None:
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=2, arch="resnet18", discriminator_width=8)
    weights = CADNetWeights(adv_feature=0.5, adv_image=0.25)
    f_h, f_l = blurred_pair(torch.Generator().manual_seed(0), 4)
    images = torch.rand(3, 4, 3, 64, 32) * 2 - 1
    saved = {"f_h": f_h, "f_l": f_l, "x_h": images[0], "rec_h": images[1], "rec_l": images[2]}
    terms = CADNetObjective(model, weights)(DISCRIMINATOR, saved)
    assert set(terms) == {"d_feature", "d_image", "acc_d_feature", "acc_d_image", "total"}
    expected = 0.5 * terms["d_feature"] + 0.25 * terms["d_image"]
    assert torch.allclose(terms["total"], expected)
    for name in ("acc_d_feature", "acc_d_image"):
        assert 0.0 <= float(terms[name]) <= 1.0 and not terms[name].requires_grad
