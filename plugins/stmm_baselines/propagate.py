"""Training-free spatial smoothing: the "neighbourhood average, then cluster" baseline.

:class:`PropagateGraphModel` returns the fused features averaged over the spatial graph ``hops`` times,
``z = (D + I)^-1 (A + I) … (D + I)^-1 (A + I) x`` (each spot and its graph neighbours, equal weights: the
propagation of SGC, Wu et al. 2019, with the row-normalised adjacency; BANKSY's neighbourhood mean without its own
expression beside it). No parameters are learnt: the embedding, and so the domains, depend on the seed only
through the clustering. It is the simplest model that uses position, the baseline a graph model has to beat.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stmm_core.interfaces import GraphContext, GraphModelOutput, PartitionSupport

from .identity import IdentityGraphModel
from .params import PropagateGraphParams


def mean_adjacency(ctx: GraphContext) -> Tensor:
    """``(D + I)^-1 (A + I)`` as sparse CSR ``(N, N)`` float32 (row = spot, columns = itself and its neighbours).

    The degree is :attr:`GraphContext.degree` where set (a partition's subgraph, whose halo spots lost their outer
    edges, is averaged as in the whole graph), else counted in ``edge_index``. Cached in ``ctx.cache``.
    """
    cached = ctx.cache.get("propagate.mean_adj")
    if cached is not None:
        return cached
    from stmm_core.adjacency import mean_adjacency as build

    adj = build(ctx.edge_index, ctx.n_nodes, ctx.degree)
    ctx.cache["propagate.mean_adj"] = adj
    return adj


class PropagateGraphModel(IdentityGraphModel):
    """``x (N, D)`` → ``x`` averaged over each spot and its graph neighbours, ``hops`` times ``(N, D)``.

    As :class:`IdentityGraphModel` (one inert parameter, a loss identically zero) apart from the averaging."""

    def __init__(self, params: PropagateGraphParams) -> None:
        super().__init__(params)  # type: ignore[arg-type]

    @classmethod
    def partition_support(cls, params: PropagateGraphParams) -> PartitionSupport:  # type: ignore[override]
        """``hops`` hops; exact (no randomness)."""
        return PartitionSupport(hops=params.hops)

    def forward(self, x: Tensor, graph: GraphContext | None = None) -> GraphModelOutput:
        """The averaged features as mean, sample and reconstruction (zero log-variance)."""
        h = x.float()
        if graph is not None and self.params.hops > 0:
            adj = mean_adjacency(graph).to(h.device)
            for _ in range(self.params.hops):
                h = adj @ h
        return GraphModelOutput(z=h, mu=h, logvar=torch.zeros_like(h), recon=h)
