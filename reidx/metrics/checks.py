"""Input checks shared by the metrics: the error type and array coercion."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reidx.errors import ReidxError


class MetricInputError(ReidxError, ValueError):
    """Bad input to a metric: a ``ValueError`` for library callers, a one-line ``ReidxError`` for the CLI."""


def to_numpy(values: Any) -> np.ndarray:
    """A NumPy view or copy of an array, a CPU/GPU tensor or a sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()
        return values.numpy()
    return np.asarray(values)
