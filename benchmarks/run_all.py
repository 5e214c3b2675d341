"""Run every benchmark and print one summary table (`make bench`; `--quick` for smaller sizes).

Each benchmark measures ours against a baseline in the same run and returns its figures; this runner only
collects them. Figures depend on the machine: compare ratios, not absolute times, across machines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time

from rich.console import Console
from rich.table import Table

BENCHMARKS = (
    "bench_prepare",
    "bench_metrics",
    "bench_retrieval",
    "bench_milvus",
    "bench_serve",
    "bench_coldstart",
    "bench_train",
    "bench_export",
    "bench_rerank",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes, not tens of minutes)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmark modules")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for name in args.only.split(","):
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        results[name] = module.main(["--quick"] if args.quick else [])
        results[name]["wall_s"] = time.perf_counter() - started
    table = Table(title="reidx benchmarks (this machine)")
    table.add_column("benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, figures in results.items():
        for key, value in figures.items():
            table.add_row(name, key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
