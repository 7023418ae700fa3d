"""Weighted concatenation fusion (StereoMM's ``att_mode=self``, i.e. no attention).

It has no trainable parameters; it is still an ``nn.Module`` so that ``.to()``, ``.train()``/``.eval()`` and
``state_dict()`` (empty) behave like every other fusion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stmm_core.errors import DataError
from stmm_core.interfaces import Fusion, GraphContext, PartitionSupport

from .params import ConcatFusionParams


class ConcatFusion(nn.Module, Fusion):
    """``[img_weight·img ‖ gene_weight·gene]``: ``(N, D_img)``/None, ``(N, D_gene)`` → ``(N, D_img + D_gene)``.

    The pipeline's default reconstruction target (``train.target = inputs``) is the same concatenation.
    """

    shapes = {"img": "(N, D_img) | None", "gene": "(N, D_gene)", "return": "(N, D_img + D_gene)"}

    def __init__(self, params: ConcatFusionParams) -> None:
        nn.Module.__init__(self)
        Fusion.__init__(self, params)
        self.d_img: int | None = None
        self.d_gene: int | None = None
        self.out_dim = 0

    def setup(self, d_img: int | None, d_gene: int) -> None:
        """Record the input widths; ``out_dim = d_img + d_gene`` (or ``d_gene`` without image)."""
        if d_gene < 1 or (d_img is not None and d_img < 1):
            raise DataError(f"fusion needs positive feature widths, got image={d_img}, gene={d_gene}")
        self.d_img, self.d_gene = d_img, d_gene
        self.out_dim = d_gene + (d_img or 0)

    def _concat(self, img: Tensor | None, gene: Tensor) -> Tensor:
        p = self.params
        if gene.ndim != 2:
            raise DataError(f"gene features must be 2-D (N, D_gene), got shape {tuple(gene.shape)}")
        gene = gene if gene.dtype == torch.float32 else gene.float()
        if img is None:
            return gene * p.gene_weight
        if img.ndim != 2 or img.shape[0] != gene.shape[0]:
            raise DataError(
                f"image features {tuple(img.shape)} and gene features {tuple(gene.shape)} must be (N, D) "
                "with the same N"
            )
        img = img if img.dtype == torch.float32 else img.float()
        return torch.cat([img * p.img_weight, gene * p.gene_weight], dim=1)

    def forward(self, img: Tensor | None, gene: Tensor, graph: GraphContext | None = None) -> Tensor:
        """Weighted concatenation ``(N, out_dim)``; ``graph`` is ignored."""
        return self._concat(img, gene)

    @classmethod
    def partition_support(cls, params: ConcatFusionParams) -> PartitionSupport:
        """Per spot: 0 hops, exact."""
        return PartitionSupport(hops=0)
