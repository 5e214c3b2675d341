"""One training step: which parameters each phase moves, and what the ablation switches cut off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidx.data.prepare import prepare_dataset
from reidx.models import build_model
from reidx.models.cadnet import CADNetObjective, CADNetWeights
from reidx.train import TrainConfig, Trainer
from reidx.train.files import epoch_line

TINY = dict(arch="resnet18", pretrained=False, input_size=(64, 32), discriminator_width=8, workers=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-steps") / "synth"
    prepare_dataset("synthetic", None, out, ids=8, cameras=2, images_per_camera=2, workers=2)
    return out


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [param.detach().clone() for param in module.parameters()]


def moved(module: torch.nn.Module, before: list[torch.Tensor]) -> list[bool]:
    return [not torch.equal(param, old) for param, old in zip(module.parameters(), before, strict=True)]


def first_batches(trainer: Trainer):
    return next(iter(trainer.loaders(1)))


def test_each_phase_moves_only_its_own_parameters(dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(dataset=str(dataset), batch_ids=2, batch_instances=2, val_ids=0, **TINY), tmp_path)
    model = trainer.model
    generator = {"E": model.encoder, "G": model.decoder, "F": model.hr_encoder, "C": model.classifier}
    discriminators = {"D_F": model.feature_discriminator, "D_I": model.image_discriminator}
    before = {name: snapshot(module) for name, module in {**generator, **discriminators}.items()}
    hr_batch, lr_batch = first_batches(trainer)

    terms, saved = trainer.generator_step(hr_batch, lr_batch)
    assert set(terms) == {"id", "triplet", "rec", "adv_feature", "adv_image", "total"}
    for name, module in generator.items():
        changes = moved(module, before[name])
        assert any(changes), f"the generator step left {name} unchanged"
    for name, module in discriminators.items():
        assert not any(moved(module, before[name])), f"the generator step changed {name}"

    after_g = {name: snapshot(module) for name, module in {**generator, **discriminators}.items()}
    d_terms = trainer.discriminator_step(saved)
    assert set(d_terms) == {"d_feature", "d_image", "acc_d_feature", "acc_d_image", "d_total"}
    for name, module in generator.items():
        assert not any(moved(module, after_g[name])), f"the discriminator step changed {name}"
    for name, module in discriminators.items():
        assert all(moved(module, after_g[name])), f"the discriminator step left part of {name} unchanged"


def test_channels_last_steps_as_the_default_layout(dataset: Path, tmp_path: Path) -> None:
    """``--channels-last`` lays the model and its image batches out channels-last, and one training step (the
    generator's, then the discriminators') gives the default layout's losses up to float rounding."""
    losses = {}
    for layout in (False, True):
        options = dict(batch_ids=2, batch_instances=2, val_ids=0, channels_last=layout, **TINY)
        trainer = Trainer(TrainConfig(dataset=str(dataset), **options), tmp_path / str(layout))
        hr_batch, lr_batch = first_batches(trainer)
        kernels = [param for param in trainer.model.parameters() if param.dim() == 4]
        images = trainer._to_device(hr_batch)[0]
        layout_of = torch.channels_last if layout else torch.contiguous_format
        assert all(tensor.is_contiguous(memory_format=layout_of) for tensor in [*kernels, images])
        assert layout == any(not kernel.is_contiguous() for kernel in kernels)  # a 1x1 kernel is both
        losses[layout] = trainer.train_step(hr_batch, lr_batch)
    assert set(losses[True]) == set(losses[False])
    for name, value in losses[False].items():
        assert losses[True][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_baseline_step_has_no_discriminator_phase(dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset=str(dataset), model="baseline", batch_ids=2, batch_instances=2, val_ids=0, **TINY)
    trainer = Trainer(config, tmp_path)
    before = snapshot(trainer.model)
    terms = trainer.train_step(*first_batches(trainer))
    assert set(terms) == {"id", "triplet", "total"} and trainer.opt_d is None
    assert all(moved(trainer.model, before)[:-3])  # every trunk weight (BN-neck and FC included below)
    assert any(moved(trainer.model.classifier, before[-3:]))


def test_a_step_that_mixed_precision_skips_is_counted_and_the_epoch_line_names_the_fix(
    dataset: Path, tmp_path: Path
) -> None:
    """AMP's gradient scaler skips a step whose gradients are not finite; the trainer counts it (amp_skipped),
    the weights stay, and an epoch that skipped most steps says so with the fix (a GPU study once trained 15
    epochs without one update, and only torch's scheduler-order warning hinted at it)."""
    config = TrainConfig(dataset=str(dataset), model="baseline", batch_ids=2, batch_instances=2, val_ids=0, **TINY)
    trainer = Trainer(config, tmp_path)
    trainer.use_amp, trainer.scaler_g = True, torch.amp.GradScaler("cpu")  # CPU autocast stands in for CUDA's
    hr_batch, lr_batch = first_batches(trainer)
    assert trainer.train_step(hr_batch, lr_batch)["amp_skipped"] == 0.0
    before = snapshot(trainer.model)
    images, labels = hr_batch
    terms = trainer.train_step((images * float("nan"), labels), lr_batch)
    assert terms["amp_skipped"] == 1.0 and not any(moved(trainer.model, before))
    line = epoch_line({"epoch": 3, "total": terms["total"], "amp_skipped": 1.0})
    assert "mixed precision skipped 100% of the steps" in line and "--no-amp" in line
    assert "skipped" not in epoch_line({"epoch": 3, "total": 1.0, "amp_skipped": 0.25})


def decoder_gradient(weights: CADNetWeights) -> tuple[dict[str, torch.Tensor], float, float]:
    """Loss terms and the gradient norms of G and E after one backward of the generator objective."""
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=3, arch="resnet18", discriminator_width=8)
    objective = CADNetObjective(model, weights)
    x = torch.rand(6, 3, 64, 32) * 2 - 1
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    terms, _ = objective("generator", x, y, x.flip(0), x, y)
    terms["total"].backward()
    norm = lambda module: sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)  # noqa: E731
    return terms, norm(model.decoder), norm(model.encoder)


def test_no_rec_cuts_the_reconstruction_gradient_to_g() -> None:
    only_adv_feature = dict(identity=0.0, triplet=0.0, adv_image=0.0, adv_feature=0.01)
    terms, g_grad, e_grad = decoder_gradient(CADNetWeights(rec=0.0, **only_adv_feature))
    assert "rec" not in terms
    assert g_grad == 0.0 and e_grad > 0.0  # L_adv^{D_F} reaches E but not G
    terms, g_grad, _ = decoder_gradient(CADNetWeights(rec=1.0, **only_adv_feature))
    assert "rec" in terms and g_grad > 0.0


def test_ablation_switches_remove_their_terms() -> None:
    config = TrainConfig(rec=False, adv_image=False, lambda_adv_feature=0.5)
    weights = CADNetWeights.from_config(config)
    assert (weights.rec, weights.adv_image, weights.adv_feature) == (0.0, 0.0, 0.5)
    terms, _, _ = decoder_gradient(weights)
    assert set(terms) == {"id", "triplet", "adv_feature", "total"}


def test_no_rec_hr_counts_the_lr_term_twice_in_l_rec() -> None:
    assert CADNetWeights.from_config(TrainConfig(rec_hr=False)).rec_hr is False
    torch.manual_seed(0)
    model = build_model("cadnet", num_classes=3, arch="resnet18", discriminator_width=8, residual_recovery=True)
    x_h, y = torch.rand(4, 3, 64, 32) * 2 - 1, torch.tensor([0, 0, 1, 1])
    x_l = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x_h, 4), size=(64, 32), mode="bilinear")
    recovered = model(torch.cat([x_h, x_l]))["recovered"].detach()
    lr_term = torch.nn.functional.l1_loss(recovered[4:], x_h)
    quiet = dict(identity=0.0, triplet=0.0, adv_feature=0.0, adv_image=0.0)
    both, _ = CADNetObjective(model, CADNetWeights(**quiet))("generator", x_h, y, x_l, x_h, y)
    lr_only, _ = CADNetObjective(model, CADNetWeights(rec_hr=False, **quiet))("generator", x_h, y, x_l, x_h, y)
    hr_term = torch.nn.functional.l1_loss(recovered[:4], x_h)
    torch.testing.assert_close(both["rec"], hr_term + lr_term)
    torch.testing.assert_close(lr_only["rec"], 2 * lr_term)
    assert abs(float(hr_term - lr_term)) > 1e-3  # the two terms differ, so the switch is seen
