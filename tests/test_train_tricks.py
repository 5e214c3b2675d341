"""The strong-baseline training options [B] (Luo et al., CVPRW 2019) and the validation set: each does what
its help says (the model-side BNNeck and last stride are in test_models.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidx.data.prepare import prepare_dataset
from reidx.errors import ReidxError
from reidx.models.losses import LossWeights, Objective
from reidx.train.config import TrainConfig
from reidx.train.data import ERASE_FILL, HRImages, LRImages, erased, load_training_set, validation_ids
from reidx.train.schedule import Schedule, schedule_of
from reidx.train.validation import build_validation_set


def test_label_smoothing_loss_matches_the_smoothed_targets_by_hand() -> None:
    """ε = 0.1 over K = 3 ids: target 1 − ε + ε/K on the true id, ε/K elsewhere; ε = 0 is plain CE."""
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = logits.log_softmax(dim=1)[0]
    eps, k = 0.1, 3
    by_hand = -((1 - eps + eps / k) * log_p[0] + eps / k * (log_p[1] + log_p[2]))
    model = torch.nn.Module()
    weights = LossWeights(identity=1.0, triplet=0.0, label_smoothing=eps)
    assert weights == LossWeights.from_config(TrainConfig(label_smoothing=eps, lambda_tri=0.0))

    class Fixed(torch.nn.Module):  # a "model" whose logits are the known ones, for HR and LR alike
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": logits.repeat(len(x), 1)}

    model = Fixed()
    labels = torch.tensor([0])
    x = torch.zeros(1, 3, 4, 4)
    terms, _ = Objective(model, weights)("generator", x, labels, x, x, labels)
    assert terms["id"].item() == pytest.approx(2 * by_hand.item(), abs=1e-6)  # the HR and the LR batch
    plain, _ = Objective(model, LossWeights(triplet=0.0))("generator", x, labels, x, x, labels)
    assert plain["id"].item() == pytest.approx(-2 * log_p[0].item(), abs=1e-6)


def test_warmup_ramps_linearly_from_the_factor_then_each_schedule_decays() -> None:
    """10 warm-up steps from lr/10 to lr, then poly / cosine over the remaining 90 steps, or ÷10 at 33% and 58%."""
    poly = Schedule("poly", total=100, warmup=10, warmup_factor=0.1, power=0.9)
    assert [poly(step) for step in (0, 5, 10)] == pytest.approx([0.1, 0.55, 1.0])
    assert poly(55) == pytest.approx(0.5**0.9) and poly(100) == 0.0 and poly(150) == 0.0
    cosine = Schedule("cosine", total=100, warmup=10)
    assert [cosine(step) for step in (10, 55, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-9)
    step = Schedule("step", total=100, warmup=10, milestones=(0.33, 0.58))
    assert [step(s) for s in (9, 10, 32, 33, 57, 58, 99)] == pytest.approx([0.91, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_without_warmup_poly_is_the_schedule_runs_had_before() -> None:
    config = TrainConfig(epochs=3, poly_power=0.9)
    schedule = schedule_of(config, steps_per_epoch=7)
    assert all(schedule(s) == pytest.approx((1 - s / 21) ** 0.9) for s in range(22))
    warm = schedule_of(TrainConfig(epochs=3, warmup_epochs=1, lr_schedule="cosine"), steps_per_epoch=7)
    assert warm.warmup == 7 and warm.total == 21 and warm(0) == pytest.approx(0.1)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_the_trainer_steps_the_learning_rate_along_the_schedule(tmp_path: Path) -> None:
    """Through the real Trainer: a warm-up epoch starts at lr·factor and reaches lr when it ends."""
    from reidx.train.engine import Trainer
    from tests.tiny import TINY

    data = tmp_path / "data"
    prepare_dataset("synthetic", None, data, ids=6, cameras=2, images_per_camera=2, workers=1)
    options = {"dataset": str(data), "model": "baseline", "epochs": 2, "warmup_epochs": 1, "val_ids": 0, "lr": 0.01}
    trainer = Trainer(TrainConfig.from_dict({**options, **TINY}), tmp_path / "run")
    steps = trainer.steps_per_epoch
    seen = []
    for _ in range(steps):
        seen.append(trainer.scheduler.get_last_lr()[0])
        trainer.scheduler.step()
    assert seen[0] == pytest.approx(0.001) and trainer.scheduler.get_last_lr()[0] == pytest.approx(0.01)
    assert seen == sorted(seen)


def test_random_erasing_fills_one_rectangle_with_p_1_and_nothing_with_p_0() -> None:
    image = torch.rand(3, 32, 16) * 2 - 1
    twin = image * 0.5
    assert erased([image], random.Random(0), 0.0)[0] is image
    state = random.Random(0)
    erased([image], state, 0.0)
    assert state.random() == random.Random(0).random()  # p = 0 draws nothing: older runs' draws unchanged
    for seed in range(20):
        out, out_twin = erased([image, twin], random.Random(seed), 1.0)
        changed = (out != image).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
        assert changed.any() and torch.equal(changed, (out_twin != twin).any(dim=0))  # the same rectangle
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and changed.sum() == box.numel()  # one solid rectangle
        area = box.numel() / changed.numel()
        assert 0.01 <= area <= 0.45
        fill = torch.tensor(ERASE_FILL).view(3, 1)
        assert torch.allclose(out[:, changed], fill.expand(3, int(changed.sum())))
        assert torch.equal(out[:, ~changed], image[:, ~changed])


def test_datasets_erase_hr_and_lr_alike_only_when_asked(tmp_path: Path, write_image) -> None:
    paths = [str(write_image(tmp_path / f"{i}.png", (32, 16))) for i in range(2)]
    key = (0, 123)
    plain_hr, plain_lr = HRImages(paths, [0, 1], (32, 16)), LRImages(paths, [0, 1], (32, 16), [2])
    hr, lr = HRImages(paths, [0, 1], (32, 16), erasing=1.0), LRImages(paths, [0, 1], (32, 16), [2], erasing=1.0)
    assert not torch.equal(hr[key][0], plain_hr[key][0])
    x_l, x_h, _ = lr[key]
    plain_l, plain_h, _ = plain_lr[key]
    assert torch.equal((x_l != plain_l).any(dim=0), (x_h != plain_h).any(dim=0))
    assert (x_h != plain_h).any()
    assert torch.equal(HRImages(paths, [0, 1], (32, 16), erasing=0.0)[key][0], plain_hr[key][0])


def test_val_ids_takes_a_fraction_or_a_count() -> None:
    ids = list(range(100))
    assert len(validation_ids(ids, 0.25, 0)) == 25
    assert validation_ids(ids, 25, 0) == validation_ids(ids, 0.25, 0)  # same seeded draw, same ids
    assert len(validation_ids(ids, 80, 0)) == 80 and validation_ids(ids, 0, 0) == set()
    with pytest.raises(ReidxError, match="--val-ids 99 leaves 1 of 100"):
        validation_ids(ids, 99, 0)
    assert TrainConfig(val_ids=80).check().val_ids == 80
    with pytest.raises(ReidxError, match="--val-ids 2.5"):
        TrainConfig(val_ids=2.5).check()


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"label_smoothing": 1.0}, "ε in"),
        ({"random_erasing": 1.5}, "p in"),
        ({"warmup_factor": 0.0}, "factor in"),
        ({"lr_steps": (0.6, 0.3)}, "increasing"),
        ({"last_stride": 3}, "1 or 2"),
        ({"lr_schedule": "linear"}, "poly, step, cosine"),
    ],
)
def test_bad_trick_values_are_refused(options: dict, fix: str) -> None:
    with pytest.raises(ReidxError, match=fix):
        TrainConfig(**options).check()


def test_validation_ranks_like_the_test_on_viper(tmp_path: Path, viper_tree) -> None:
    """MLR-VIPeR's test takes cam_a's image as the query, single-shot: validation does the same with the held-out
    training ids, and a count of them can be asked for."""
    prepare_dataset("viper", viper_tree(tmp_path / "v", ids=40), tmp_path / "d", rates=(2, 3, 4), trials=1)
    data = load_training_set(tmp_path / "d", 0, 8, seed=0)
    assert (data.protocol, data.query_camera) == ("single-shot", 0)
    assert data.validation["pid"].nunique() == 8 and data.num_classes == 12
    entries = build_validation_set(data.validation, data.rates, 0, data.protocol, data.query_camera)
    assert entries.protocol == "single-shot"
    assert set(entries.camids[entries.is_query].tolist()) == {0} and set(entries.camids[~entries.is_query]) == {1}
    assert set(entries.rates[entries.is_query].tolist()) <= {2, 3, 4}
    drawn = build_validation_set(data.validation, data.rates, 0)  # no test camera given: one drawn per id
    assert drawn.protocol == "multi-shot" and set(drawn.camids[drawn.is_query].tolist()) == {0, 1}
    assert math.isclose(np.mean(entries.is_query), 0.5)


def test_rank_queries_uses_the_sets_protocol() -> None:
    from reidx.train.validation import ValidationSet, rank_queries

    # two ids; id 0 has two gallery images, one of them the closest to the query of id 1
    entries = ValidationSet(
        ["q0", "q1", "g0a", "g0b", "g1"],
        np.array([0, 1, 0, 0, 1]),
        np.array([0, 0, 1, 1, 1]),
        np.array([2, 2, 1, 1, 1]),
    )
    vectors = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0], [-0.3, 1.0]]), dim=1)
    multi = rank_queries(vectors.numpy(), entries)
    entries.protocol = "single-shot"
    single = rank_queries(vectors.numpy(), entries)
    assert multi["rank1"] == pytest.approx(0.5)  # q1's nearest is g0b
    assert 0.5 < single["rank1"] < 1.0  # when g0a is drawn instead of g0b, q1 finds g1
