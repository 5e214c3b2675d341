"""The studies' statistics (`benchmarks/studies.py`): Student-t intervals over splits and paired per-split
differences, and `bench_viper.py`'s tables."""

from __future__ import annotations

import math

import pytest

from benchmarks.bench_viper import tables
from benchmarks.studies import diff_cell
from reidx.metrics.stats import mean_ci, paired_ci


def test_mean_ci_is_student_t_on_the_sample_sd() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])  # sd 1, t_{0.975,2} = 4.303
    assert mean == 2.0
    assert half == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([5.0]) == (5.0, None)
    assert mean_ci([4.0] * 40) == (4.0, 0.0)  # beyond the table: the normal quantile


def test_paired_difference_uses_only_shared_splits_and_cancels_split_difficulty() -> None:
    baseline = {0: 10.0, 1: 30.0, 2: 20.0, 3: 99.0}
    cadnet = {0: 12.0, 1: 32.0, 2: 22.0}  # split 3 not finished
    splits, mean, half = paired_ci(cadnet, baseline)
    assert splits == [0, 1, 2]
    assert mean == pytest.approx(2.0) and half == pytest.approx(0.0)  # unpaired, the spread would swamp it
    assert diff_cell(cadnet, baseline) == "+2.0 ± 0.0"
    assert diff_cell({}, baseline) == "–"


def test_tables_name_each_variants_init_and_pair_against_the_baseline() -> None:
    values = {
        "baseline": {"LR R1": {0: 10.0, 1: 20.0}},
        "cadnet": {"LR R1": {0: 11.0, 1: 23.0}, "PSNR": {0: 21.0, 1: 21.0}, "SSIM": {0: 0.7, 1: 0.7}},
    }
    text = tables(values, {"baseline": "imagenet", "cadnet": "imagenet"})
    assert "| baseline | imagenet | 2 | 15.0 ± 63.5 |" in text  # sd 7.07, t_{0.975,1} = 12.706
    assert "| cadnet − baseline | 2 | +2.0 ± 12.7 |" in text
    assert "+1.0 +3.0 |" in text
    assert "21.00 ± 0.00 (0.700 ± 0.000)" in text
