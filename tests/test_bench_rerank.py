"""``benchmarks.bench_rerank --state``: the large stages resume across sittings. A second run searches no
k-NN block and produces no distance block again, the online stage reuses the batch stage's pass over the
same items, and the totals are the recorded seconds."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_rerank

ARGS = ["--sizes", "", "--large", "1500", "--online", "1500", "--queries", "4"]


def test_state_resumes_the_batch_and_online_stages(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = bench_rerank.main([*ARGS, "--state", str(state)])
    passes = sorted(state.glob("pass-*.json"))
    assert len(passes) == 1  # (c)'s gallery is (b)'s items: one pass, searched once
    blocks = json.loads(passes[0].read_text())["blocks"]
    assert list(blocks) == ["0"] and len(list((state / "knn").glob("knn-*.npz"))) == 1
    rows = json.loads((state / "batch-1500-256.json").read_text())["rows"]
    assert first["b1500_s"] >= blocks["0"] + sum(rows.values())
    second = bench_rerank.main([*ARGS, "--state", str(state)])
    assert json.loads(passes[0].read_text())["blocks"] == blocks  # nothing searched again ...
    assert json.loads((state / "batch-1500-256.json").read_text())["rows"] == rows  # ... nor produced again
    assert second["b1500_s"] >= blocks["0"] + sum(rows.values()) and second["c1500_build_s"] >= blocks["0"]
