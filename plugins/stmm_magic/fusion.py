"""Token-level fusion: gene tokens attend to each other and to the image patch tokens.

Each of ``depth`` blocks runs (pre-LN, residual) self-attention over ``[CLS] + gene tokens``, cross-attention
from those to the image tokens, and a feed-forward layer. The output is the final [CLS] state. Unlike the
published module, attention runs over real sequences (L gene tokens × T image tokens), so queries and keys
matter. 2-D inputs ``(B, D)`` are accepted as sequences of length 1 (then the block reduces to an MLP).
"""

from __future__ import annotations

import torch
from torch import nn

from stmm_core.interfaces import Fusion, PartitionSupport
from stmm_magic.params import TokenFusionParams


class FusionBlock(nn.Module):
    """Self-attention, cross-attention, feed-forward; ``x`` ``(B, L, d)``, ``mem`` ``(B, T, d)`` → ``(B, L, d)``."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_mem = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(dim * ff_mult, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.drop(self.self_attn(h, h, h, need_weights=False)[0])
        h, m = self.norm_cross(x), self.norm_mem(mem)
        x = x + self.drop(self.cross_attn(h, m, m, need_weights=False)[0])
        return x + self.drop(self.ff(self.norm_ff(x)))


class TokenCrossAttentionFusion(nn.Module, Fusion):
    """``forward(img (B, T, D_img) | (B, D_img), gene (B, L, D_gene) | (B, D_gene))`` → ``(B, dim)``."""

    shapes = {"img": "(B, T, D_img) | (B, D_img)", "gene": "(B, L, D_gene) | (B, D_gene)", "return": "(B, dim)"}

    def __init__(self, params: TokenFusionParams) -> None:
        nn.Module.__init__(self)
        Fusion.__init__(self, params)
        self.out_dim = params.dim
        self.cls = nn.Parameter(torch.zeros(1, 1, params.dim))
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(
            FusionBlock(params.dim, params.heads, params.ff_mult, params.dropout) for _ in range(params.depth)
        )
        self.norm = nn.LayerNorm(params.dim)
        self.img_in: nn.Linear | None = None
        self.gene_in: nn.Linear | None = None

    def setup(self, d_img: int | None, d_gene: int) -> None:
        """Size the input projections (image token width, gene token width)."""
        if d_img is None:
            raise ValueError("token-cross-attention fusion needs image tokens")
        self.img_in = nn.Linear(d_img, self.params.dim)
        self.gene_in = nn.Linear(d_gene, self.params.dim)

    @classmethod
    def partition_support(cls, params: TokenFusionParams) -> PartitionSupport:
        """Per spot (no graph): 0 hops; exact without dropout."""
        return PartitionSupport(hops=0, exact=params.dropout == 0.0,
                                reason="" if params.dropout == 0.0 else "dropout masks are drawn per partition")

    def forward(self, img: torch.Tensor, gene: torch.Tensor, graph: object = None) -> torch.Tensor:
        if self.img_in is None or self.gene_in is None:
            raise RuntimeError("call setup(d_img, d_gene) before using the fusion module")
        if img.ndim == 2:
            img = img.unsqueeze(1)
        if gene.ndim == 2:
            gene = gene.unsqueeze(1)
        mem = self.img_in(img)
        x = torch.cat([self.cls.expand(gene.shape[0], -1, -1), self.gene_in(gene)], dim=1)
        for block in self.blocks:
            x = block(x, mem)
        return self.norm(x[:, 0])
