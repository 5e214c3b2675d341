"""The one embedding loop and the one recovery path, on a tiny untrained CAD-Net and real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidx.checkpoint import LoadedModel, save_checkpoint
from reidx.data.transforms import downsample, to_model_input, to_unit_range
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths, iter_embeddings
from reidx.evaluation.embedders import TorchEmbedder
from reidx.evaluation.recovery import BILINEAR, MODEL, score_recovery
from reidx.io import load_image
from reidx.metrics import recovery_metrics
from reidx.models import build_model
from reidx.models.loading import load_model

SIZE = (64, 32)


@pytest.fixture(scope="module")
def cadnet(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "last.pt"
    save_checkpoint(path, build_model("cadnet", num_classes=3, arch="resnet18", discriminator_width=8), SIZE)
    return load_model(path)


@pytest.fixture
def paths(tmp_path: Path, write_image) -> list[str]:
    return [str(write_image(tmp_path / f"{i:04d}_c1s1_000001_00.png", (32, 16))) for i in range(5)]


def inputs(paths: list[str], rates: list[int]) -> torch.Tensor:
    """Model inputs built by hand: each image down-sampled by its rate, then resized to SIZE."""
    return torch.stack([to_model_input(downsample(load_image(p), r), SIZE) for p, r in zip(paths, rates, strict=True)])


def test_embeddings_with_per_entry_rates_are_the_models_embeddings_of_the_lr_images(cadnet, paths) -> None:
    rates = [1, 2, 3, 1, 4]
    embedder = TorchEmbedder(cadnet.model, SIZE, "g")
    got = np.concatenate(list(iter_embeddings(embedder, paths, rates=rates, batch_size=2, workers=0)))
    expected = cadnet.model.embed(inputs(paths, rates), "g").numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    hr = embed_paths(cadnet, paths, "g", batch_size=2, workers=0)
    np.testing.assert_allclose(hr[[0, 3]], got[[0, 3]], atol=1e-6)  # rate 1 is the image as read
    assert not np.allclose(hr[1], got[1], atol=1e-4)


def test_embed_paths_checks_the_mode_once_at_the_entry(cadnet, paths) -> None:
    with pytest.raises(ReidxError, match="no 'x' embedding"):
        embed_paths(cadnet, paths, "x")


def test_recovery_scores_are_g_and_bilinear_against_the_hr_originals(cadnet, paths) -> None:
    rates = [2, 3, 4, 2, 3]
    scores = score_recovery(cadnet.model, paths, paths, SIZE, rates=rates, lpips=False, batch_size=2, workers=0)
    assert list(scores) == [MODEL, BILINEAR]
    lr, hr = inputs(paths, rates), inputs(paths, [1] * len(paths))
    bilinear = recovery_metrics(to_unit_range(lr), to_unit_range(hr), lpips=False)
    model = recovery_metrics(to_unit_range(cadnet.model.recover(lr)), to_unit_range(hr), lpips=False)
    np.testing.assert_allclose(scores[BILINEAR].psnr, bilinear.psnr, rtol=1e-5)
    np.testing.assert_allclose(scores[MODEL].ssim, model.ssim, rtol=1e-4, atol=1e-5)
    without_model = score_recovery(None, paths, paths, SIZE, rates=rates, lpips=False, workers=0)
    assert list(without_model) == [BILINEAR]
