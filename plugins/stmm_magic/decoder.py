"""Expression decoder: image tokens → expansion layers → transformer decoder over learned gene queries.

One learned query per target gene attends (cross-attention) to the expanded image tokens and to the other
gene queries (self-attention), so the decoder is a real sequence model (G queries × T image tokens), not the
length-1 "transformer" of the published code. A shared linear read-out plus a per-gene bias (initialised to
the training mean) gives ``log1p(counts / total · target_sum)`` for every target gene.

With ``ridge_readout = w > 0`` the decoder also holds a linear read-out of the mean image token fitted by
cross-validated ridge before stage 2 (:mod:`stmm_magic.readout`; buffers, saved with the run, never trained);
in eval mode the prediction is ``(1 - w) · decoder + w · ridge``. Training optimises the decoder's own output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from stmm_core.interfaces import Decoder
from stmm_magic.params import QueryDecoderParams


class GeneQueryDecoder(nn.Module, Decoder):
    """``forward(tokens (B, T, D_img) | (B, D_img))`` → predicted expression ``(B, G)`` (log1p-normalised)."""

    shapes = {"tokens": "(B, T, D_img) | (B, D_img)", "return": "(B, G_out)"}
    target_space = "log1p_normalised"

    def __init__(self, params: QueryDecoderParams) -> None:
        nn.Module.__init__(self)
        Decoder.__init__(self, params)
        self.targets: list[str] = []
        self.expand: nn.Sequential | None = None

    def setup(self, d_img: int, targets: Sequence[str], gene_mean: np.ndarray | None = None) -> "GeneQueryDecoder":
        """Build the layers for image tokens of width *d_img* and the target genes (names, in output order)."""
        p = self.params
        self.targets = [str(g) for g in targets]
        g = len(self.targets)
        layers: list[nn.Module] = []
        width = d_img
        for h in list(p.expansion) + [p.dim]:
            layers += [nn.Linear(width, h), nn.GELU(), nn.LayerNorm(h)]
            width = h
        self.expand = nn.Sequential(*layers)
        self.queries = nn.Parameter(torch.randn(g, p.dim) * 0.02)
        layer = nn.TransformerDecoderLayer(p.dim, p.heads, dim_feedforward=p.dim * p.ff_mult, dropout=p.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, p.depth, norm=nn.LayerNorm(p.dim))
        self.readout = nn.Linear(p.dim, 1)
        nn.init.zeros_(self.readout.weight)  # start exactly at the per-gene mean predictor (no random offsets)
        nn.init.zeros_(self.readout.bias)
        self.linear = None
        if p.linear_head:
            self.linear = nn.Linear(d_img, g, bias=False)
            nn.init.zeros_(self.linear.weight)
        self.gene_bias = nn.Parameter(torch.zeros(g))
        if p.ridge_readout > 0:
            self.register_buffer("ridge_weight", torch.zeros(g, d_img))
            self.register_buffer("ridge_bias", torch.zeros(g))
            self.register_buffer("ridge_fitted", torch.zeros((), dtype=torch.long))
        if gene_mean is not None:
            with torch.no_grad():
                self.gene_bias.copy_(torch.as_tensor(np.asarray(gene_mean, dtype=np.float32)))
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.expand is None:
            raise RuntimeError("call setup(d_img, targets) before using the decoder")
        if tokens.ndim == 2:
            tokens = tokens.unsqueeze(1)
        memory = self.expand(tokens)  # (B, T, dim)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        h = self.decoder(q, memory)  # (B, G, dim)
        out = self.readout(h).squeeze(-1) + self.gene_bias
        if self.linear is not None:
            out = out + self.linear(tokens.mean(1))
        w = float(self.params.ridge_readout)
        if w > 0 and not self.training and bool(self.ridge_fitted):
            ridge = tokens.mean(1) @ self.ridge_weight.T + self.ridge_bias
            out = (1.0 - w) * out + w * ridge
        return out

    @torch.no_grad()
    def set_ridge(self, weight: np.ndarray | torch.Tensor, bias: np.ndarray | torch.Tensor) -> None:
        """Store the ridge read-out ``(G, D_img)`` / ``(G,)`` (only with ``ridge_readout > 0``)."""
        if not self.params.ridge_readout > 0:
            raise RuntimeError("this decoder has no ridge read-out (decoder.ridge_readout = 0)")
        self.ridge_weight.copy_(torch.as_tensor(np.asarray(weight, dtype=np.float32)))
        self.ridge_bias.copy_(torch.as_tensor(np.asarray(bias, dtype=np.float32)))
        self.ridge_fitted.fill_(1)
