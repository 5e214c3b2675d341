"""Resumable training state: every object with ``state_dict``/``load_state_dict`` captured and restored by
name, plus the torch, CUDA, NumPy and Python RNG states, as plain tensors and Python types."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidx.errors import ReidxError, one_line
from reidx.train.files import resume_fix

#: ``{name: object with state_dict, a nested such dict, or None}``.
Stateful = dict[str, Any]


def capture(objects: Stateful) -> dict[str, Any]:
    """``{name: obj.state_dict()}`` in the same nesting (None stays None)."""
    return {
        name: capture(obj) if isinstance(obj, dict) else None if obj is None else obj.state_dict()
        for name, obj in objects.items()
    }


def restore(objects: Stateful, states: dict[str, Any]) -> None:
    """Load what :func:`capture` returned back into the same objects."""
    for name, obj in objects.items():
        if isinstance(obj, dict):
            restore(obj, states[name])
        elif obj is not None:
            obj.load_state_dict(states[name])


def restore_checked(objects: Stateful, states: dict[str, Any], rng: dict[str, Any], source: Path) -> None:
    """:func:`restore` and :func:`set_rng_state`; a damaged or foreign state is one ReidxError naming ``source``."""
    try:
        restore(objects, states)
        set_rng_state(rng)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        reason = one_line(exc, keep="first")
        raise ReidxError(
            f"{source} holds a damaged training state ({type(exc).__name__}: {reason})",
            resume_fix(source.parent),
        ) from None


def rng_state() -> dict[str, Any]:
    """torch, CUDA, NumPy and Python global RNG states as tensors and plain types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
