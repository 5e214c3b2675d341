"""Multi-GPU / multi-node training through ``torchrun`` (the process group itself: :mod:`reidx.distributed`).

One DistributedDataParallel wraps the whole training objective (so both the generator and the discriminator
phases all-reduce through it) with ``find_unused_parameters``: each phase leaves the other side's parameters
unused.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reidx.distributed import DistEnv


def wrap(module: nn.Module, env: DistEnv) -> nn.Module:
    """DDP around ``module`` when distributed, else ``module`` itself."""
    if not env.enabled:
        return module
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def check_in_sync(module: nn.Module, env: DistEnv) -> None:
    """Raise when the ranks' parameters have drifted apart (a DDP bug would show here first)."""
    if not env.enabled:
        return
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
        checksum = checksum.to(env.device)
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.isclose(low, high, rtol=1e-9, atol=1e-9).item():
        raise RuntimeError(f"DDP ranks hold different weights (checksums {low.item()} vs {high.item()})")
