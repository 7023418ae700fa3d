"""Momentum (EMA) copies of modules and feature queues, as in MoCo / ALBEF."""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of *module* in eval mode (dropout off), to be updated by :func:`ema_update`."""
    m = copy.deepcopy(module)
    m.requires_grad_(False)
    m.eval()
    return m


@torch.no_grad()
def ema_update(online: nn.Module, momentum: nn.Module, m: float) -> None:
    """``θ_m ← m·θ_m + (1 − m)·θ`` for parameters; buffers (e.g. random features) are copied."""
    for p_m, p in zip(momentum.parameters(), online.parameters()):
        p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)
    for b_m, b in zip(momentum.buffers(), online.buffers()):
        b_m.copy_(b)


class FeatureQueue(nn.Module):
    """A FIFO of the last K L2-normalised features with the dataset index of the spot each came from.

    Buffers: ``feats`` ``(K, d)``, ``idx`` ``(K,)`` int64 (−1: empty slot, never a positive), ``ptr``.
    Empty slots are filled with random unit vectors (as ALBEF initialises its queues).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = int(size)
        feats = nn.functional.normalize(torch.randn(self.size, dim), dim=-1)
        self.register_buffer("feats", feats)
        self.register_buffer("idx", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def push(self, feats: torch.Tensor, idx: torch.Tensor) -> None:
        """Enqueue ``feats`` ``(B, d)`` (oldest entries are overwritten, wrapping around)."""
        if self.size == 0:
            return
        feats, idx = feats.detach()[-self.size:], idx.detach()[-self.size:]
        n, p = feats.shape[0], int(self.ptr.item())
        pos = (torch.arange(n, device=feats.device) + p) % self.size
        self.feats[pos] = feats.to(self.feats)
        self.idx[pos] = idx.to(self.idx)
        self.ptr[0] = (p + n) % self.size
