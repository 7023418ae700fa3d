"""A small Performer: linear attention with FAVOR+ positive random features (or an elu+1 feature map).

FAVOR+ (Choromanski et al. 2021) approximates ``softmax(q·kᵀ/√d)`` by ``φ(q)·φ(k)ᵀ`` with
``φ(x) = m^-1/2 · exp(ωᵀx' − ‖x'‖²/2)``, ``x' = x·d^-1/4`` and ``ω`` orthogonal Gaussian features, so attention
over L tokens costs O(L·m·d) instead of O(L²·d). Non-causal (bidirectional), as in scBERT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def orthogonal_gaussian(nb_rows: int, nb_cols: int, generator: torch.Generator) -> torch.Tensor:
    """Random features ``(nb_rows, nb_cols)``: orthogonal blocks, rows rescaled to Gaussian norms (FAVOR+)."""
    blocks = []
    for _ in range(math.ceil(nb_rows / nb_cols)):
        g = torch.randn(nb_cols, nb_cols, generator=generator)
        q, _ = torch.linalg.qr(g)
        blocks.append(q.T)
    mat = torch.cat(blocks, 0)[:nb_rows]
    norms = torch.randn(nb_rows, nb_cols, generator=generator).norm(dim=1)
    return norms[:, None] * mat


def favor_features(x: torch.Tensor, proj: torch.Tensor, is_query: bool, eps: float = 1e-4) -> torch.Tensor:
    """Positive random features of the softmax kernel.

    Args:
        x: ``(B, H, L, d)`` queries or keys.
        proj: ``(m, d)`` random features.
        is_query: queries are stabilised per token, keys per (batch, head) (as performer-pytorch does).

    Returns:
        ``(B, H, L, m)`` non-negative features.
    """
    d = x.shape[-1]
    normaliser = d ** -0.25
    x_dash = torch.einsum("bhld,md->bhlm", x * normaliser, proj)
    diag = (x ** 2).sum(-1, keepdim=True) * (normaliser ** 2) / 2.0
    if is_query:
        stab = x_dash.amax(dim=-1, keepdim=True).detach()
    else:
        stab = x_dash.amax(dim=(-1, -2), keepdim=True).detach()
    return (proj.shape[0] ** -0.5) * (torch.exp(x_dash - diag - stab) + eps)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal linear attention ``D⁻¹ φ(Q) (φ(K)ᵀ V)``; q, k ``(B, H, L, m)``, v ``(B, H, L, e)`` → ``(B, H, L, e)``."""
    k_sum = k.sum(dim=-2)  # (B, H, m)
    d_inv = 1.0 / torch.einsum("bhlm,bhm->bhl", q, k_sum).clamp_min(1e-6)
    context = torch.einsum("bhlm,bhle->bhme", k, v)
    return torch.einsum("bhme,bhlm,bhl->bhle", context, q, d_inv)


class LinearSelfAttention(nn.Module):
    """Multi-head self-attention with a linear-attention kernel; ``(B, L, dim)`` → ``(B, L, dim)``."""

    def __init__(self, dim: int, heads: int, dim_head: int, kernel: str = "favor", nb_features: int | None = None,
                 redraw_interval: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel not in ("favor", "elu"):
            raise ValueError(f"unknown attention kernel {kernel!r}")
        inner = heads * dim_head
        self.heads, self.dim_head, self.kernel = heads, dim_head, kernel
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)
        self.nb_features = int(nb_features or max(4, int(dim_head * math.log(dim_head))))
        self.redraw_interval = int(redraw_interval)
        # The seed of the feature draws comes from the global RNG, so a seeded run is reproducible.
        self.register_buffer("feature_seed", torch.randint(0, 2**31 - 1, (1,)), persistent=True)
        self.register_buffer("calls", torch.zeros(1, dtype=torch.long), persistent=True)
        self.register_buffer("projection", self._draw(0), persistent=True)

    def _draw(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.feature_seed.item()) + 7919 * n)
        return orthogonal_gaussian(self.nb_features, self.dim_head, g)

    @torch.no_grad()
    def redraw(self) -> None:
        """Draw new random features (deterministically from the feature seed and the redraw count)."""
        n = int(self.calls.item()) // max(self.redraw_interval, 1)
        self.projection.copy_(self._draw(n).to(self.projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L, dim)`` → ``(B, L, dim)``."""
        if self.training and self.kernel == "favor" and self.redraw_interval > 0:
            if int(self.calls.item()) > 0 and int(self.calls.item()) % self.redraw_interval == 0:
                self.redraw()
            self.calls += 1
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        if self.kernel == "favor":
            q = favor_features(q, self.projection, is_query=True)
            k = favor_features(k, self.projection, is_query=False)
        else:
            q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        out = linear_attention(q, k, v)  # (B, H, L, dim_head)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.dropout(self.to_out(out))


class PerformerLayer(nn.Module):
    """Pre-LN block: ``x += Attn(LN x)``; ``x += FF(LN x)`` (GELU), ``(B, L, dim)`` → ``(B, L, dim)``."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int = 4, kernel: str = "favor",
                 nb_features: int | None = None, redraw_interval: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearSelfAttention(dim, heads, dim_head, kernel, nb_features, redraw_interval, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(dim * ff_mult, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class Performer(nn.Module):
    """A stack of :class:`PerformerLayer` with a final LayerNorm; ``(B, L, dim)`` → ``(B, L, dim)``."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int = 4, kernel: str = "favor",
                 nb_features: int | None = None, redraw_interval: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PerformerLayer(dim, heads, dim_head, ff_mult, kernel, nb_features, redraw_interval, dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)
