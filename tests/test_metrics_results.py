"""Result records: construction from metrics, JSON and weights_only round trips, trial aggregation, frames."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from reidx.metrics import RANKING_METRICS, EvalResult, MetricInputError, aggregate_trials, evaluate, results_to_frame


def trial_result(seed: int, checkpoint: str = "run/cadnet.pt", **changes) -> EvalResult:
    rng = np.random.default_rng(seed)
    dist = rng.random((30, 40))
    metrics = evaluate(
        dist,
        rng.integers(0, 10, 30),
        np.arange(40) % 10,
        np.zeros(30, int),
        np.ones(40, int),
        protocol="single-shot",
        seed=seed,
    )
    record = EvalResult.from_metrics(
        metrics, dataset="viper", query_set="LR {2,3,4} mixed", rates=(2, 3, 4), checkpoint=checkpoint, mode="cadnet"
    )
    return dataclasses.replace(record, **changes)


def test_from_metrics_reads_the_cmc():
    rng = np.random.default_rng(0)
    metrics = evaluate(
        rng.random((20, 50)), rng.integers(0, 5, 20), rng.integers(0, 5, 50), np.zeros(20, int), np.ones(50, int)
    )
    r = EvalResult.from_metrics(
        metrics, dataset="market1501", query_set="LR {2,3,4} mixed", rates=[2, 3, 4], checkpoint="c.pt", mode="cadnet"
    )
    assert (r.rank1, r.rank5, r.rank10, r.rank20) == tuple(float(metrics.cmc[k]) for k in (0, 4, 9, 19))
    assert r.mAP == metrics.mAP and len(r.cmc) == 20 and r.map_definition == metrics.map_definition
    assert r.std == dict.fromkeys(RANKING_METRICS, 0.0) and r.mINP == metrics.mINP


def test_short_cmc_is_refused():
    metrics = evaluate(np.array([[0.1, 0.2]]), [1], [1, 2], [0], [1, 1], max_rank=5)
    with pytest.raises(MetricInputError, match="max_rank"):
        EvalResult.from_metrics(metrics, dataset="d", query_set="q", rates=[2], checkpoint="c", mode="m")


def test_values_are_plain_python(tmp_path):
    record = trial_result(1)
    r = dataclasses.replace(record, metrics=record.metrics | {"rank1": np.float32(0.5)}, num_queries=np.int64(30))
    d = r.to_dict()
    assert type(d["rank1"]) is float and type(d["num_queries"]) is int
    assert all(type(v) is float for v in d["cmc"] + list(d["std"].values()))
    assert EvalResult.from_dict(json.loads(json.dumps(d))) == r
    torch.save(d, tmp_path / "r.pt")
    assert EvalResult.from_dict(torch.load(tmp_path / "r.pt", weights_only=True)) == r


def test_from_dict_rejects_unknown_or_missing_fields():
    d = trial_result(1).to_dict()
    with pytest.raises(MetricInputError, match="unknown"):
        EvalResult.from_dict({**d, "rank2": 0.1})
    del d["mAP"]
    with pytest.raises(MetricInputError, match="incomplete"):
        EvalResult.from_dict(d)


def test_aggregate_trials_mean_and_std():
    trials = [trial_result(seed, checkpoint=f"split{seed}.pt") for seed in range(4)]
    agg = aggregate_trials(trials)
    for name in ("rank1", "rank5", "mAP"):
        values = [getattr(t, name) for t in trials]
        assert getattr(agg, name) == pytest.approx(np.mean(values))
        assert agg.std[name] == pytest.approx(np.std(values))
    assert agg.trials == 4 and agg.num_queries == sum(t.num_queries for t in trials)
    assert agg.checkpoint == "split0.pt, split1.pt, split2.pt, split3.pt"
    np.testing.assert_allclose(agg.cmc, np.mean([t.cmc for t in trials], axis=0))
    assert type(agg.mAP) is float and type(agg.std["mAP"]) is float


def test_aggregate_refuses_mixed_settings():
    with pytest.raises(MetricInputError, match="protocol"):
        aggregate_trials([trial_result(0), trial_result(1, protocol="multi-shot")])
    with pytest.raises(MetricInputError):
        aggregate_trials([])


def test_results_to_frame():
    frame = results_to_frame([trial_result(0), aggregate_trials([trial_result(0), trial_result(1)])])
    assert list(frame["trials"]) == [1, 2] and frame.loc[0, "rates"] == "2,3,4"
    assert {"dataset", "protocol", "rank1", "mAP", "mAP_std", "checkpoint", "map_definition"} <= set(frame.columns)
    assert "cmc" not in frame.columns
