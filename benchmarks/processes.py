"""What the memory benchmarks share: a figure-returning function run in a fresh process, so that the peak
resident memory it reports is its own."""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable
from typing import Any


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a fresh (spawned) process and return the figures it returns."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(target, args, out))
    child.start()
    figures = out.get()
    child.join()
    return figures


def _child(target: Callable[..., dict[str, Any]], args: tuple, out: multiprocessing.Queue) -> None:
    out.put(target(*args))
