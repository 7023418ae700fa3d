"""Baseline parts that let the graph-fusion runner express "no graph model" and "image only".

* :class:`IdentityGraphModel`: the embedding is the fused input ``x`` unchanged (no message passing, no
  learning). The graph-fusion runner always runs its optimiser, so the model owns one inert scalar whose loss
  term is identically zero; the embedding never depends on it.
* :class:`ImageOnlyFusion`: the image features alone (the gene features are computed by the runner but not
  used), for the image-only baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stmm_core.errors import SpecError
from stmm_core.interfaces import Fusion, GraphContext, GraphModel, GraphModelOutput, PartitionSupport

from .params import IdentityGraphParams, ImageOnlyFusionParams


class IdentityGraphModel(nn.Module, GraphModel):
    """``x (N, D) → embedding x``: the "no graph model" baseline (PCA features straight to clustering)."""

    shapes = {"x": "(N, D_in)", "z": "(N, D_in)", "recon": "(N, D_in)"}

    def __init__(self, params: IdentityGraphParams) -> None:
        nn.Module.__init__(self)
        GraphModel.__init__(self, params)
        self.inert = nn.Parameter(torch.zeros(()))  # the runner's optimiser needs one parameter
        self.latent_dim = 0

    @classmethod
    def partition_support(cls, params: IdentityGraphParams) -> PartitionSupport:
        """No message passing: 0 hops, exact."""
        return PartitionSupport(hops=0)

    def setup(self, d_in: int, d_target: int, n_nodes: int) -> None:
        """Record the width; nothing to size."""
        self.latent_dim = int(d_in)

    def forward(self, x: Tensor, graph: GraphContext | None = None) -> GraphModelOutput:
        """Return ``x`` as mean, sample and reconstruction (zero log-variance)."""
        zeros = torch.zeros_like(x)
        return GraphModelOutput(z=x, mu=x, logvar=zeros, recon=x)

    def loss(self, out: GraphModelOutput, target: Tensor) -> dict[str, Tensor]:
        """Identically zero (kept differentiable through the inert scalar)."""
        return {"loss": self.inert * 0.0}


class ImageOnlyFusion(nn.Module, Fusion):
    """``img (N, D_img)`` → ``img``; the gene features are ignored."""

    shapes = {"img": "(N, D_img)", "gene": "(N, D_gene) (ignored)", "return": "(N, D_img)"}
    modalities = ("image",)

    def __init__(self, params: ImageOnlyFusionParams) -> None:
        nn.Module.__init__(self)
        Fusion.__init__(self, params)
        self.out_dim = 0

    def setup(self, d_img: int | None, d_gene: int) -> None:
        """Needs image features."""
        if d_img is None:
            raise SpecError("fusion 'image-only' needs an image encoder in the spec (stmm compose --encoder resnet50 …)")
        self.out_dim = int(d_img)

    def forward(self, img: Tensor | None, gene: Tensor, graph: GraphContext | None = None) -> Tensor:
        """The image features as float32."""
        return img.float()

    @classmethod
    def partition_support(cls, params: ImageOnlyFusionParams) -> PartitionSupport:
        """Per spot: 0 hops, exact."""
        return PartitionSupport(hops=0)
