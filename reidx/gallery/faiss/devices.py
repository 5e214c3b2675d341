"""Where a FAISS index runs: cloned to every GPU FAISS sees, sharded across them when it does not fit one, or
on the CPU; and the index behind a PCA pre-transform."""

from __future__ import annotations

from typing import Any

from reidx.console import err_console
from reidx.device import Devices
from reidx.errors import ReidxError, one_line


def inner_index(index: Any) -> Any:
    """The index behind a (PCA) pre-transform, or the index itself."""
    import faiss

    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def index_bytes(index: Any) -> int:
    """About what a (CPU) index takes in memory: its vectors or codes and ids, and IVF centroids."""
    inner = inner_index(index)
    if not hasattr(inner, "nlist"):
        return inner.ntotal * inner.d * 4
    return inner.ntotal * (inner.code_size + 8) + inner.nlist * inner.d * 4


#: Share of the smallest GPU's free memory an index may take before it is sharded across the GPUs.
GPU_SHARE = 0.8


def shard_across_gpus(size: int, free: list[int]) -> bool:
    """Whether an index of ``size`` bytes is split across the GPUs (free bytes each) rather than copied to
    each: only when it does not fit ``GPU_SHARE`` of the smallest one and there are several."""
    return len(free) > 1 and size > GPU_SHARE * min(free)


def gpu_free_bytes(count: int) -> list[int]:
    """Free memory of each of the first ``count`` CUDA devices (torch's view, the GPUs FAISS sees)."""
    import torch

    return [torch.cuda.mem_get_info(device)[0] for device in range(count)]


def to_device(index: Any, devices: Devices) -> tuple[Any, bool]:
    """``(index, on_gpu)``: the index cloned to every GPU FAISS sees, or sharded across them when it does
    not fit one (:func:`shard_across_gpus`), when ``devices.faiss_gpu`` (not run on a GPU in reidx's tests)."""
    import faiss

    if not devices.faiss_gpu:
        return index, False
    options = faiss.GpuMultipleClonerOptions()
    # float16 lookup tables let a large pq_m fit the GPU's shared memory; flat vectors stay float32 (exact)
    options.useFloat16 = isinstance(inner_index(index), faiss.IndexIVFPQ)
    # an index too large for one GPU is split across them (each searches its part, results merged)
    options.shard = shard_across_gpus(index_bytes(index), gpu_free_bytes(faiss.get_num_gpus()))
    try:
        return faiss.index_cpu_to_all_gpus(index, co=options), True
    except RuntimeError as exc:  # e.g. a PQ layout the GPU kernels do not support
        reason = one_line(exc, keep="last")
        if devices.name == "cuda":
            raise ReidxError(f"FAISS cannot put this index on the GPU: {reason}", "use --device cpu") from None
        err_console.print(f"note: the index stays on the CPU (FAISS GPU: {reason})", highlight=False)
        return index, False


def to_cpu(index: Any, on_gpu: bool) -> Any:
    """A CPU copy of a (possibly GPU) index."""
    import faiss

    return faiss.index_gpu_to_cpu(index) if on_gpu else index
