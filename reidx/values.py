"""Checks of values read from files reidx did not necessarily write (index headers, export metadata)."""

from __future__ import annotations

import json
from typing import Any

#: The largest model input side any reidx file may ask for (a guard against absurd allocations).
MAX_INPUT_SIDE = 4096


def is_count(value: Any, low: int = 0) -> bool:
    """An int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def input_size_problem(size: Any, name: str = "input size") -> str | None:
    """What is wrong with a stored ``[height, width]`` model input, None when nothing is."""
    if not isinstance(size, list) or len(size) != 2 or not all(is_count(side, 1) for side in size):
        return f"{name} {json.dumps(size)[:40]} is not two positive integers"
    if max(size) > MAX_INPUT_SIDE:
        return f"{name} {size} is over {MAX_INPUT_SIDE} pixels a side"
    return None
