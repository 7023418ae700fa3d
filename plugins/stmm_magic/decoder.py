"""Expression decoder: image tokens → expansion layers → transformer decoder over learned gene queries.

One learned query per target gene attends (cross-attention) to the expanded image tokens and to the other
gene queries (self-attention), so the decoder is a real sequence model (G queries × T image tokens), not the
length-1 "transformer" of the published code. A shared linear read-out plus a per-gene bias (initialised to
the training mean) gives ``log1p(counts / total · target_sum)`` for every target gene.

With ``ensemble`` set the decoder also holds read-outs of the image token fitted before stage 2 by
:mod:`stmm_magic.readout` (buffers, saved with the run, never trained): a cross-validated ridge and/or a
retrieval in stage 1's joint image–gene space. In eval mode, once they are fitted, the prediction is the mean of
the decoder's output and theirs. Training (and the validation MSE that picks the decoder's epoch) uses the
decoder's own output.
"""

from __future__ import annotations

from typing import Any, Sequence

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
        self.members: list[str] = list(p.ensemble)
        if "ridge" in self.members:
            self.register_buffer("ridge_weight", torch.zeros(g, d_img))
            self.register_buffer("ridge_bias", torch.zeros(g))
        if "retrieval" in self.members:  # sizes set when fitted or loaded (the number of training spots varies)
            self.register_buffer("retr_proj_weight", torch.zeros(0, d_img))
            self.register_buffer("retr_proj_bias", torch.zeros(0))
            self.register_buffer("retr_keys", torch.zeros(0, 0))
            self.register_buffer("retr_values", torch.zeros(0, g))
            self.register_buffer("retr_k", torch.zeros((), dtype=torch.long))
        if self.members:
            self.register_buffer("ensemble_fitted", torch.zeros((), dtype=torch.long))
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
        if self.members and not self.training and bool(self.ensemble_fitted):
            parts = [out] + [self.member_output(m, tokens.mean(1)) for m in self.members]
            out = torch.stack(parts).mean(0)
        return out

    def member_output(self, member: str, emb: torch.Tensor) -> torch.Tensor:
        """One fitted read-out of the mean image token ``emb (B, D_img)`` → ``(B, G)``."""
        if member == "ridge":
            return emb @ self.ridge_weight.T + self.ridge_bias
        if member == "retrieval":
            q = nn.functional.normalize(emb @ self.retr_proj_weight.T + self.retr_proj_bias, dim=-1)
            k = int(self.retr_k)
            idx = (q @ self.retr_keys.T).topk(k, dim=1).indices  # (B, k) nearest training spots
            return self.retr_values[idx].mean(1)
        raise ValueError(f"unknown ensemble member {member!r}")

    @torch.no_grad()
    def set_ensemble(self, ridge: tuple[np.ndarray, np.ndarray] | None = None,
                     retrieval: dict[str, Any] | None = None) -> None:
        """Store the fitted read-outs: ``ridge = (W (G, D), b (G,))``; ``retrieval`` = ``proj_weight (e, D)``,
        ``proj_bias (e,)``, ``keys (N, e)`` unit gene embeddings, ``values (N, G)`` targets, ``k``."""
        if not self.members:
            raise RuntimeError("this decoder has no read-out ensemble (decoder.ensemble is empty)")
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        if "ridge" in self.members:
            self.ridge_weight.copy_(f32(ridge[0]))
            self.ridge_bias.copy_(f32(ridge[1]))
        if "retrieval" in self.members:
            for name in ("proj_weight", "proj_bias", "keys", "values"):
                setattr(self, f"retr_{name}", f32(retrieval[name]))
            self.retr_k.fill_(int(retrieval["k"]))
        self.ensemble_fitted.fill_(1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # retrieval buffers take the saved sizes (the number of training spots is known only after fitting)
        for name in ("retr_proj_weight", "retr_proj_bias", "retr_keys", "retr_values"):
            key = prefix + name
            if name in self._buffers and key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
