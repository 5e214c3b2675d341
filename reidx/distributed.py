"""This process's place in a ``torchrun`` job (training, sharded embedding): the same command, detected from
RANK/WORLD_SIZE; NCCL on GPUs, gloo on CPU. One process alone never imports torch here (an ONNX embed runs
without it); the training-only parts (DDP, weight sync checks) are in :mod:`reidx.train.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from reidx.device import Devices
from reidx.errors import ReidxError, one_line

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. ``place`` is its torch device, or (one process) the :class:`Devices`
    it is resolved from on first use of :attr:`device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    place: torch.device | Devices = field(default_factory=lambda: Devices("cpu"))

    @property
    def device(self) -> torch.device:
        return self.place.torch if isinstance(self.place, Devices) else self.place

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(devices: Devices) -> DistEnv:
    """This process's device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(place=devices)
    import torch
    import torch.distributed as dist

    # torch.distributed.nn binds group.WORLD into its functions' defaults when it is imported, and torchvision
    # imports it. Imported after init_process_group, it keeps the group alive past destroy_process_group, so
    # gloo's worker threads outlive teardown and may still free a collective's tensors while the interpreter
    # exits: SIGABRT ("terminate called without an active exception"). Imported here, it binds None.
    import torch.distributed.nn  # noqa: F401

    device = devices.torch
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ReidxError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs",
                "use --nproc_per_node up to the number of GPUs",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, device)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()


def together(env: DistEnv, step: Callable[[], T], fix: str = "fix it and run the same command again") -> T:
    """``step()`` on every rank, its outcome agreed before any rank goes on: when it failed on any rank, rank 0
    raises that failure as one ReidxError naming the rank and the other ranks stop quietly (exit 1), so that no
    rank waits in a collective call for a rank that has gone (and dies there with a traceback). ``step`` must
    make no collective calls itself. Without torchrun: just ``step()``."""
    if not env.enabled:
        return step()
    import torch.distributed as dist

    result: Any = None
    try:
        result, outcome = step(), ("ok", "", None)
    except ReidxError as exc:
        outcome = ("error", exc.message, exc.fix)
    except Exception as exc:  # noqa: BLE001 - reported by rank 0 as one line; this rank stops quietly
        outcome = ("error", f"{type(exc).__name__}: {one_line(exc, 200)}", None)
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, outcome)
    failed = next(((rank, found) for rank, found in enumerate(gathered) if found[0] != "ok"), None)
    if failed is None:
        return result
    if not env.is_main:
        raise SystemExit(1)
    rank, (_, message, own_fix) = failed
    raise ReidxError(message if rank == 0 else f"rank {rank}: {message}", own_fix or fix)


def teardown(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
