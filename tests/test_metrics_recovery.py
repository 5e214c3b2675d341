"""Recovery metrics: SSIM, PSNR, and LPIPS reported unavailable (never downloaded) without its weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidx.metrics import (
    RECOVERY_METRICS,
    MetricInputError,
    RecoveryResult,
    lpips_unavailable_reason,
    recovery_metrics,
)
from reidx.metrics.recovery import alexnet_weights_path


@pytest.fixture
def no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))


def images(n=3, h=32, w=16, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_identical_images(no_lpips_weights):
    x = images()
    r = recovery_metrics(x, x.clone())
    np.testing.assert_allclose(r.ssim, 1.0, atol=1e-6)
    assert np.isinf(r.psnr).all() and len(r.ssim) == 3


def test_psnr_of_a_known_mse(no_lpips_weights):
    target = torch.full((2, 3, 32, 16), 0.5)
    pred = target + torch.tensor([0.1, 0.02]).view(2, 1, 1, 1)
    r = recovery_metrics(pred, target)
    np.testing.assert_allclose(r.psnr, [10 * math.log10(1 / 0.1**2), 10 * math.log10(1 / 0.02**2)], rtol=1e-4)
    assert (r.ssim < 1).all()
    summary = r.summary()
    assert type(summary["psnr"]) is float and summary["lpips"] is None


def test_lpips_unavailable_without_weights(no_lpips_weights, tmp_path):
    r = recovery_metrics(images(), images(seed=1))
    assert r.lpips is None
    assert str(alexnet_weights_path()).startswith(str(tmp_path)) and "TORCH_HOME" in r.lpips_reason
    assert r.lpips_reason == lpips_unavailable_reason()
    assert not any(tmp_path.rglob("*.pth"))  # nothing was downloaded


def test_lpips_can_be_skipped():
    r = recovery_metrics(images(), images(seed=1), lpips=False)
    assert r.lpips is None and r.lpips_reason == "LPIPS not requested"


@pytest.mark.skipif(lpips_unavailable_reason() is not None, reason="AlexNet weights are not on this machine")
def test_lpips_with_local_weights():
    x = images(h=64, w=64)
    r = recovery_metrics(x, x.clone())
    np.testing.assert_allclose(r.lpips, 0.0, atol=1e-6)
    assert r.lpips_reason is None


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 32), "differ in shape"),
        (torch.rand(2, 1, 32, 16), torch.rand(2, 1, 32, 16), r"\(N, 3, H, W\)"),
        (torch.rand(2, 3, 32, 16) + 1, torch.rand(2, 3, 32, 16), r"outside \[0, 1\]"),
    ],
)
def test_bad_images(pred, target, message):
    with pytest.raises(MetricInputError, match=message):
        recovery_metrics(pred, target, lpips=False)


def test_concat_of_batches_equals_one_batch_and_summary_is_its_mean(no_lpips_weights):
    pred, target = images(5), images(5, seed=1)
    whole = recovery_metrics(pred, target)
    parts = RecoveryResult.concat([recovery_metrics(pred[:2], target[:2]), recovery_metrics(pred[2:], target[2:])])
    np.testing.assert_allclose(parts.ssim, whole.ssim, rtol=1e-6)
    np.testing.assert_allclose(parts.psnr, whole.psnr, rtol=1e-6)
    assert parts.lpips is None and parts.lpips_reason == whole.lpips_reason
    summary = parts.summary()
    assert list(summary) == list(RECOVERY_METRICS) and summary["lpips"] is None
    assert summary["psnr"] == pytest.approx(float(whole.psnr.mean()))
    with pytest.raises(MetricInputError):
        RecoveryResult.concat([])
