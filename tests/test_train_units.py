"""Training building blocks: the P×K sampler, the triplet loss, the config layers."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from reidx.errors import ReidxError
from reidx.models.losses import batch_hard_triplet
from reidx.train.config import TrainConfig, build_config, read_config_file, resume_config
from reidx.train.sampler import IdentityBatchSampler

LABELS = [pid for pid in range(6) for _ in range(3)] + [6]  # id 6 has one image only


def sampler(**kwargs) -> IdentityBatchSampler:
    options = dict(ids_per_batch=4, instances=2, steps=5, seed=3)
    options.update(kwargs)
    return IdentityBatchSampler(LABELS, **options)


def test_sampler_batches_are_p_distinct_ids_times_k() -> None:
    batches = list(sampler())
    assert len(batches) == 5
    for batch in batches:
        ids = [LABELS[index] for index, _ in batch]
        assert len(batch) == 8
        assert Counter(ids) == Counter({pid: 2 for pid in set(ids)}) and len(set(ids)) == 4
    seen = Counter(LABELS[index] for batch in batches for index, _ in batch)
    assert set(seen) == set(range(7))  # every identity visited, the one-image id repeated


def test_sampler_is_deterministic_per_epoch_and_stream() -> None:
    first, again = sampler(), sampler()
    assert list(first) == list(again)
    again.set_epoch(1)
    assert list(first) != list(again)
    assert list(sampler(stream=1)) != list(first)
    restored = sampler()
    restored.load_state_dict(again.state_dict())
    assert list(restored) == list(again)


def test_sampler_shards_ranks_disjointly() -> None:
    ranks = [list(sampler(rank=rank, world_size=2)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    assert not {tuple(b) for b in ranks[0]} & {tuple(b) for b in ranks[1]}
    everything = sampler(world_size=2).epoch_batches(0)
    assert ranks[0] + ranks[1] == everything[0::2] + everything[1::2]


def test_sampler_needs_p_identities() -> None:
    with pytest.raises(ReidxError, match="only 7 training identities"):
        sampler(ids_per_batch=8)


def test_batch_hard_triplet_matches_hand_computation() -> None:
    angles = torch.tensor([0.0, 0.3, 1.2, 1.4])
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    chord = lambda a, b: 2 * math.sin(abs(a - b) / 2)  # noqa: E731 - distance of two unit vectors
    a = angles.tolist()
    expected = [
        2 + chord(a[0], a[1]) - chord(a[0], a[2]),
        2 + chord(a[1], a[0]) - chord(a[1], a[2]),
        2 + chord(a[2], a[3]) - chord(a[2], a[1]),
        2 + chord(a[3], a[2]) - chord(a[3], a[1]),
    ]
    loss = batch_hard_triplet(points * 5, labels, margin=2.0)  # scale must not matter (L2-normalised)
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-5)
    assert batch_hard_triplet(points, labels, margin=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_batch_hard_triplet_is_float32_under_half_precision_autocast() -> None:
    """Under AMP the distances stay float32: in float16 the diagonal's clamp (1e-12) rounds to 0, and on CUDA
    every gradient came back non-finite, so the scaler skipped every step (a 15-epoch run never moved)."""
    torch.manual_seed(0)
    embeddings = torch.randn(16, 64).relu().requires_grad_()
    labels = torch.arange(4).repeat_interleave(4)
    expected = batch_hard_triplet(embeddings, labels, margin=0.3)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = batch_hard_triplet(embeddings, labels, margin=0.3)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('arch = "resnet18"\ninput-size = "128x64"\nlambda_rec = 5.0\nepochs = 3\n')
    config = build_config({"epochs": 7, "rec": False}, path)
    assert (config.arch, config.input_size, config.lambda_rec, config.epochs, config.rec) == (
        "resnet18",
        (128, 64),
        5.0,
        7,
        False,
    )
    assert TrainConfig.from_dict(config.to_dict()) == config
    path.write_text("no_such_option = 1\n")
    with pytest.raises(ReidxError, match="unknown training option 'no_such_option'"):
        read_config_file(path)
    with pytest.raises(ReidxError, match="--arch resnet99"):
        build_config({"arch": "resnet99"})


def test_resume_config_refuses_changed_model_options(tmp_path: Path) -> None:
    saved = TrainConfig(arch="resnet34", epochs=2).to_dict()
    assert resume_config(saved, {"epochs": 5, "pretrained": False}, tmp_path).epochs == 5
    with pytest.raises(ReidxError, match="trained with arch=resnet34, not resnet18"):
        resume_config(saved, {"arch": "resnet18"}, tmp_path)


def test_epoch_line_shows_rank1_and_map_as_the_report_does() -> None:
    from reidx.metrics import percent
    from reidx.train.files import epoch_line

    row = {"epoch": 3, "total": 1.23456, "val_rank1": 0.83749, "val_mAP": 0.7125, "val_psnr": 23.844}
    assert epoch_line(row) == "epoch 3: loss 1.2346, val Rank-1 83.7%, mAP 71.2%, PSNR 23.84 dB"
    assert f"Rank-1 {percent(row['val_rank1'])}%" in epoch_line(row)
    assert epoch_line({"epoch": 1, "total": 2.0}) == "epoch 1: loss 2.0000"
    row |= {"val_mINP": 0.4321, "val_psnr_bilinear": 21.5}
    assert epoch_line(row).endswith("mAP 71.2%, mINP 43.2%, PSNR 23.84 dB, bilinear PSNR 21.50 dB")
