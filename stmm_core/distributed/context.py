"""The process group of a ``torchrun`` launch, and the few collectives stmm needs.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment (set by ``torchrun`` / ``stmm fit --nproc N``).
:func:`init` starts the default process group once: gloo on CPU, NCCL when the run uses CUDA. Every helper
degrades to the single-process behaviour when the run is not distributed, so callers need no branches.

* :func:`shard` — the contiguous block of rows ``[lo, hi)`` of this rank (blocks in rank order);
* :func:`gather_rows` — every rank's block, concatenated in rank order on every rank (so row order is kept);
* :func:`all_reduce_grads` — sum the gradients of parameters over ranks (data-parallel training).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def world_size() -> int:
    """Number of processes of this run (1 when not launched by torchrun)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_world_size())
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", "0") or 0)


def is_distributed() -> bool:
    return world_size() > 1


def init(device: str = "cpu") -> bool:
    """Start the default process group from the torchrun environment (once); True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def finish() -> None:
    """Destroy the process group if this process started one."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except ImportError:  # pragma: no cover
        pass


def shard(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``r`` out of ``w``: contiguous blocks of ⌈n/w⌉ or ⌊n/w⌋ rows, in rank order."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    bounds = np.linspace(0, n, w + 1).round().astype(np.int64)
    return int(bounds[r]), int(bounds[r + 1])


def gather_rows(local: np.ndarray, n_total: int) -> np.ndarray:
    """Concatenate every rank's ``(n_r, ...)`` block in rank order, on every rank → ``(n_total, ...)``.

    Blocks are padded to the largest block for ``all_gather`` (gloo and NCCL need equal shapes).
    """
    if not is_distributed():
        return local
    import torch
    import torch.distributed as dist

    w = world_size()
    sizes = [shard(n_total, r, w) for r in range(w)]
    width = max(hi - lo for lo, hi in sizes)
    t = torch.zeros((width, *local.shape[1:]), dtype=torch.from_numpy(local[:0].copy()).dtype)
    t[: len(local)] = torch.from_numpy(np.ascontiguousarray(local))
    if dist.get_backend() == "nccl":
        t = t.cuda()
    bufs = [torch.empty_like(t) for _ in range(w)]
    dist.all_gather(bufs, t)
    return np.concatenate([b[: hi - lo].cpu().numpy() for b, (lo, hi) in zip(bufs, sizes)], axis=0)


def all_reduce_grads(params: Iterable["torch.Tensor"]) -> None:
    """Sum ``p.grad`` over ranks (a parameter without a gradient takes part as zeros)."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    off = 0
    for p in params:
        k = p.grad.numel()
        p.grad.copy_(flat[off:off + k].view_as(p.grad))
        off += k


def all_reduce_scalars(values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of floats over ranks (same keys on every rank)."""
    if not is_distributed():
        return values
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """The ``torchrun`` command that re-runs ``stmm <argv>`` in ``nproc`` processes on this machine."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
            "-m", "stmm_core", *argv]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
