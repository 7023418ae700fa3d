"""BLEEP's projection heads and its contrastive loss (torch).

Xie et al., "Spatially Resolved Gene Expression Prediction from H&E Histology Images via Bi-modal Contrastive
Learning" (NeurIPS 2023): an image head and an expression head map each spot into one space; the loss pulls a
spot's image towards its own expression. With ``soft=True`` (BLEEP) the targets are not the identity but
``softmax(((S_img + S_expr) / 2) / T)`` of the within-modality similarities, so two spots that look alike and
express alike are not pushed apart; with ``soft=False`` it is CLIP's symmetric InfoNCE.

Embeddings are L2-normalised before the similarities (BLEEP uses raw dot products with T = 1); the temperature
is then on the cosine scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """``(B, d_in)`` → ``(B, d)``: linear projection, GELU, linear, dropout, residual, LayerNorm (BLEEP/CLIP)."""

    def __init__(self, d_in: int, d: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(d_in, d)
        self.fc = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projection(x)
        return self.norm(self.dropout(self.fc(F.gelu(p))) + p)


class BleepHeads(nn.Module):
    """The trained part of a bleep pipeline: ``image`` and ``gene`` heads into a shared ``d``-wide space."""

    def __init__(self, d_image: int, d_gene: int, d: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.image = ProjectionHead(d_image, d, dropout)
        self.gene = ProjectionHead(d_gene, d, dropout)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_image)`` → L2-normalised ``(B, d)``."""
        return F.normalize(self.image(x), dim=-1)

    def embed_gene(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_gene)`` → L2-normalised ``(B, d)``."""
        return F.normalize(self.gene(x), dim=-1)


def contrastive_loss(img: torch.Tensor, expr: torch.Tensor, temperature: float, soft: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE between normalised ``img`` and ``expr`` ``(B, d)`` (row i of each is spot i).

    ``soft``: BLEEP's targets ``softmax(((img img^T + expr expr^T) / 2) / T)``, else the identity.
    """
    logits = expr @ img.T / temperature  # (B, B): row = an expression profile, column = an image
    if soft:
        targets = F.softmax(((img @ img.T + expr @ expr.T) / 2) / temperature, dim=-1)
    else:
        targets = torch.eye(len(img), dtype=img.dtype, device=img.device)
    loss_expr = F.cross_entropy(logits, targets)
    loss_img = F.cross_entropy(logits.T, targets.T)
    return (loss_expr + loss_img) / 2
