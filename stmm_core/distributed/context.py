"""The process group of a ``torchrun`` launch, and the few collectives stmm needs.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment (set by ``torchrun`` / ``stmm fit --nproc N``).
:func:`init` starts the default process group once: gloo on CPU, NCCL when the run uses CUDA. Every helper
degrades to the single-process behaviour when the run is not distributed, so callers need no branches.

* :func:`shard` — the contiguous block of rows ``[lo, hi)`` of this rank (blocks in rank order);
* :func:`gather_rows` — every rank's block, concatenated in rank order on every rank (so row order is kept);
* :func:`all_reduce_grads` — sum the gradients of parameters over ranks (data-parallel training);
* :func:`gather_batch` — every rank's block of a mini-batch tensor, concatenated in rank order, optionally
  differentiable (the gradient of each block flows back to the rank that owns it).
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


def exit_now(code: int = 0) -> None:
    """End a distributed worker process now, skipping the interpreter's finalisation.

    Under torchrun with gloo (torch 2.13, CPU), a worker that has finished its work, destroyed its process group
    and written its results still aborts now and then while the interpreter tears down C++ state ("terminate
    called without an active exception", SIGABRT; seen in ~1 of 6 runs on a loaded 2-core machine), and torchrun
    then reports the whole job as failed. Everything is flushed first, so nothing written is lost.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover - a closed stream
            pass
    os._exit(int(code))


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


def active() -> bool:
    """True when a process group with more than one process is running (collectives may be issued)."""
    try:
        import torch.distributed as dist

        return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    except ImportError:  # pragma: no cover
        return False


def batch_sizes(n_total: int, w: int | None = None) -> list[int]:
    """Rows of each rank when a batch of *n_total* rows is split by :func:`shard` (rank order)."""
    w = world_size() if w is None else w
    return [hi - lo for lo, hi in (shard(n_total, r, w) for r in range(w))]


def gather_batch(local: "torch.Tensor", n_total: int, grad: bool = False) -> "torch.Tensor":
    """Concatenate every rank's block ``(n_r, ...)`` of a batch of *n_total* rows (blocks as :func:`shard`) in
    rank order → ``(n_total, ...)`` on every rank; *local* itself when not distributed.

    ``grad=True`` makes the result differentiable: the backward pass sums, over ranks, the gradient with
    respect to the whole gathered tensor and hands each rank the rows of its own block (as ALBEF/BLIP's
    gather layer). Every rank must call this in the same order with the same *n_total*.
    """
    if not active():
        return local
    import torch

    sizes = batch_sizes(n_total)
    if grad and local.requires_grad:
        return _GatherBatch.apply(local, n_total)
    return _gather_padded(local.detach(), sizes)


def _gather_padded(local: "torch.Tensor", sizes: list[int]) -> "torch.Tensor":
    import torch
    import torch.distributed as dist

    width = max(sizes)
    if local.shape[0] != sizes[rank()]:
        raise RuntimeError(f"rank {rank()} holds {local.shape[0]} rows of the batch, expected {sizes[rank()]}")
    buf = local.new_zeros((width, *local.shape[1:]))
    buf[: local.shape[0]] = local
    bufs = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(bufs, buf.contiguous())
    return torch.cat([b[:n] for b, n in zip(bufs, sizes)], 0)


def _gather_batch_fn():
    import torch

    class GatherBatch(torch.autograd.Function):
        @staticmethod
        def forward(ctx, local, n_total):  # type: ignore[override]
            ctx.sizes = batch_sizes(n_total)
            return _gather_padded(local, ctx.sizes)

        @staticmethod
        def backward(ctx, grad_out):  # type: ignore[override]
            import torch.distributed as dist

            g = grad_out.contiguous().clone()
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            lo = sum(ctx.sizes[: rank()])
            return g[lo: lo + ctx.sizes[rank()]], None

    return GatherBatch


class _LazyGather:
    """Builds the autograd function on first use (this module must not import torch at import time)."""

    _fn = None

    def apply(self, *args):
        if _LazyGather._fn is None:
            _LazyGather._fn = _gather_batch_fn()
        return _LazyGather._fn.apply(*args)


_GatherBatch = _LazyGather()


def all_reduce_mean_scalars(values: dict[str, float]) -> dict[str, float]:
    """Mean of a dict of floats over ranks (same keys on every rank); *values* when not distributed."""
    if not active():
        return values
    w = world_size()
    return {k: v / w for k, v in all_reduce_scalars(values).items()}


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
