"""``reidx report --rerank / --query-expansion / --open-set`` through the real CLI on a tiny synthetic dataset
with a tiny untrained checkpoint: re-ranked, AQE and open-set numbers recomputed here from the same embeddings
with the dense reference re-ranking, ``average_query_expansion`` and the metrics APIs."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reidx.cli import main
from reidx.data.manifest import read_dataset
from reidx.data.prepare import prepare_dataset
from reidx.evaluation.embed import embed_paths
from reidx.metrics import evaluate, evaluate_embeddings
from reidx.metrics.open_set import open_set
from reidx.models.loading import load_model
from reidx.retrieval.expansion import average_query_expansion, left_out_expansion
from reidx.retrieval.rerank import RerankParams
from reidx.retrieval.rerank.reference import left_out_dense, rerank_dense

PARAMS = RerankParams(k1=5, k2=3, lam=0.2)
RERANKED = "re-ranked k1 5 / k2 3 / λ 0.2"
FLAGS = ["--rerank", "--k1", "5", "--k2", "3", "--lambda", "0.2", "--query-expansion", "2", "--open-set"]


def cli(*args: object) -> int:
    """``reidx ARGS`` in this process; its exit code."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["reidx", *map(str, args)])
        try:
            main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
    return 0


@dataclass
class Run:
    root: Path
    dataset: Path
    checkpoint: Path

    def args(self, *extra: object) -> list[object]:
        return ["report", "--checkpoint", self.checkpoint, "--dataset", self.dataset, "--modes", "fused", *extra]

    def read(self, name: str) -> str:
        return (self.root / name).read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Run:
    root = tmp_path_factory.mktemp("report-scoring")
    dataset = root / "synthetic"
    prepare_dataset(
        "synthetic", None, dataset, rates=(2, 3), trials=1, ids=8, cameras=2, images_per_camera=2, workers=1
    )
    checkpoint = root / "run" / "last.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_checkpoint, checkpoint)
    made = Run(root, dataset, checkpoint)
    for fmt in ("md", "csv", "json"):
        assert cli(*made.args(*FLAGS, "--workers", 0, "--format", fmt, "--out", root / f"report.{fmt}")) == 0
    return made


@cache
def _embeddings(checkpoint: Path, dataset: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """The main (mixed) queries and the gallery of trial 0, and their fused embeddings."""
    frame, _ = read_dataset(dataset)
    queries = frame[(frame["split"] == "query") & (frame["query_set"] == "mixed") & (frame["trial"] == 0)]
    gallery = frame[(frame["split"] == "gallery") & (frame["trial"] == 0)]
    vectors = embed_paths(load_model(checkpoint), [*queries["path"], *gallery["path"]], "fused", workers=0)
    return queries, gallery, vectors[: len(queries)], vectors[len(queries) :]


def _labels(queries: pd.DataFrame, gallery: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return (
        queries["pid"].to_numpy(),
        gallery["pid"].to_numpy(),
        queries["camid"].to_numpy(),
        gallery["camid"].to_numpy(),
    )


def _ranking(document: dict, scoring: str) -> dict:
    return next(r for r in document["ranking"] if r["scoring"] == scoring and r["set"] == "mixed")


def test_reranked_rows_equal_the_dense_reference_on_the_same_embeddings(run: Run) -> None:
    queries, gallery, q, g = _embeddings(run.checkpoint, run.dataset)
    distances = rerank_dense(np.concatenate([q, g]), len(q), PARAMS)
    expected = evaluate(distances, *_labels(queries, gallery), seed=read_dataset(run.dataset)[1].seed)
    row = _ranking(json.loads(run.read("report.json")), RERANKED)
    assert row["mode"] == "fused" and row["trials"] == 1
    for name in ("rank1", "rank5", "mAP", "mINP"):
        assert row[name] == pytest.approx(expected.value(name), abs=1e-9), name
    plain = _ranking(json.loads(run.read("report.json")), "plain")
    reference = evaluate_embeddings(q, g, *_labels(queries, gallery))
    assert plain["mAP"] == pytest.approx(reference.mAP, abs=1e-9)


def test_aqe_rows_rank_the_expanded_queries(run: Run) -> None:
    queries, gallery, q, g = _embeddings(run.checkpoint, run.dataset)
    expected = evaluate_embeddings(average_query_expansion(q, g, 2), g, *_labels(queries, gallery))
    row = _ranking(json.loads(run.read("report.json")), "AQE 2")
    assert row["mAP"] == pytest.approx(expected.mAP, abs=1e-9)
    assert row["mINP"] == pytest.approx(expected.mINP, abs=1e-9)


def test_markdown_and_csv_label_the_rows_beside_the_plain_ones(run: Run) -> None:
    text = run.read("report.md")
    main_table = text.split("## Cross-resolution re-ID", 1)[1].split("##", 1)[0]
    for mode in ("| fused |", f"| fused, {RERANKED} |", "| fused, AQE 2 |"):
        assert mode in main_table
    assert "k-reciprocal re-ranking of Zhong et al." in text
    frame = pd.read_csv(run.root / "report.csv")
    ranking = frame[(frame["table"] == "ranking") & (frame["set"] == "mixed")]
    assert sorted(ranking["scoring"]) == sorted(["plain", RERANKED, "AQE 2"])


def test_open_set_table_holds_the_thresholds_of_plain_aqe_and_reranked_scores(run: Run) -> None:
    queries, gallery, q, g = _embeddings(run.checkpoint, run.dataset)
    labels = _labels(queries, gallery)
    alone = left_out_expansion(q, g, labels[0], labels[1], 2)  # impostor trials: the identity left out
    expected = {
        "plain": open_set(q @ g.T, *labels, kind="similarity"),
        "AQE 2": open_set(
            average_query_expansion(q, g, 2) @ g.T,
            *labels,
            kind="similarity",
            impostors=np.where(labels[1] == labels[0][:, None], -np.inf, alone @ g.T).max(1),
        ),
        RERANKED: open_set(
            rerank_dense(np.concatenate([q, g]), len(q), PARAMS),
            *labels,
            kind="distance",
            impostors=left_out_dense(q, g, labels[0], labels[1], PARAMS),
        ),
    }
    records = json.loads(run.read("report.json"))["open_set"]
    for scores, result in expected.items():
        rows = [r for r in records if r["scores"] == scores]
        assert [r["target_fmr"] for r in rows] == [0.01, 0.05, 0.10]
        for row, point in zip(rows, result.points, strict=True):
            assert row["threshold"] == pytest.approx(point.threshold, abs=1e-6)
            assert (row["fmr"], row["tmr"]) == (pytest.approx(point.fmr), pytest.approx(point.tmr))
            assert (row["num_genuine"], row["num_impostor"]) == (result.num_genuine, result.num_impostor)
    text = run.read("report.md")
    assert "## Open set: synthetic" in text and "`search --min-score` applies to plain inner products" in text
    frame = pd.read_csv(run.root / "report.csv")
    assert len(frame[frame["table"] == "open-set"]) == 9  # plain, AQE 2, re-ranked x 3 rates


def test_second_run_hits_the_cache(run: Run, run_cli) -> None:
    code, _, err = run_cli(*run.args(*FLAGS, "--workers", 0, "--out", run.root / "again.md"))
    assert code == 0 and "evaluated 0, cached" in err
    assert run.read("again.md").split("## Plots")[0] == run.read("report.md").split("## Plots")[0]
    code, _, err = run_cli(*run.args("--rerank", "--k1", 6, "--workers", 0, "--out", run.root / "k6.md"))
    assert code == 0 and "evaluated 1, cached" in err  # other parameters: another cache entry


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--rerank", "--k1", "0"], "--k1 0"),
        (["--rerank", "--k2", "0"], "--k2 0"),
        (["--rerank", "--lambda", "1.5"], "--lambda 1.5"),
        (["--rerank", "--lambda", "-0.1"], "--lambda -0.1"),
        (["--query-expansion", "-1"], "--query-expansion -1"),
    ],
)
def test_out_of_range_flags_are_refused_in_one_line(run: Run, run_cli, flags: list[str], named: str) -> None:
    code, out, err = run_cli(*run.args(*flags, "--out", run.root / "never.md"))
    assert code == 1 and not out and not (run.root / "never.md").exists()
    assert err.startswith("error:") and named in err and len(err.strip().splitlines()) == 1


def test_evaluate_blocks_equals_evaluate_and_refuses_gaps() -> None:
    from reidx.metrics import MetricInputError, evaluate_blocks

    rng = np.random.default_rng(0)
    distances = rng.random((7, 11))
    labels = (rng.integers(0, 3, 7), rng.integers(0, 3, 11), np.zeros(7, int), np.ones(11, int))
    whole = evaluate(distances, *labels)
    blocks = evaluate_blocks(((s, distances[s : s + 3]) for s in range(0, 7, 3)), (7, 11), *labels)
    assert np.array_equal(whole.cmc, blocks.cmc) and whole.scores == blocks.scores
    with pytest.raises(MetricInputError, match="consecutive"):
        evaluate_blocks([(0, distances[:3]), (4, distances[4:])], (7, 11), *labels)
    with pytest.raises(MetricInputError, match="cover 3 of 7"):
        evaluate_blocks([(0, distances[:3])], (7, 11), *labels)
