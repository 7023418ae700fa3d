"""Graph autoencoder with a DGI-style local contrastive loss (the GraphST family).

Model (Long et al., *Nat. Commun.* 14, 1155 (2023), fixed and generalised to any stmm fusion input)::

    h   = Â (x W_enc)                      (N, L)   graph encoder (one layer, linear; Â: GCN's or GraphST's)
    x̂   = Â (h W_dec)                      (N, D_t) graph decoder, linear output → reconstruction
    e   = ReLU(h)                                    spot representation
    s_i = σ(normalise(mean_{j ∈ N(i) ∪ {i}} e_j))    neighbourhood summary of spot i (readout="nearest": N(i) =
                                                     the readout_k nearest graph neighbours, GraphST's 3-NN)
    x̃   = x[π]                                       corrupted features (rows shuffled)
    loss = recon_weight · MSE(x̂, target) + contrastive_weight · (BCE(D(s, e) = 1, D(s, ẽ) = 0)
                                                               + BCE(D(s̃, ẽ) = 1, D(s̃, e) = 0))

with ``D(s, e) = eᵀ W s + b`` a bilinear discriminator. The clustered embedding is the reconstruction
``x̂`` (as GraphST) or the latent code ``h`` (``embedding="latent"``). In eval mode no corruption is computed.

Partition training is exact (:meth:`ContrastiveGAE.partition_support`): two hops (encoder + decoder, encoder +
neighbourhood summary); the ``graphst`` propagation matrix is normalised with the whole graph's degrees
(``GraphContext.degree``), and the negatives are the input rows at one permutation of the whole section
(``GraphContext.negatives``, drawn with :meth:`ContrastiveGAE.negative_permutation`, the draw full-batch
training makes).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmm_core.errors import DataError
from stmm_core.interfaces import GraphContext, GraphModel, GraphModelOutput, PartitionSupport

from .layers import build_adj_norm, make_conv
from .params import ContrastiveGAEParams


def neighbourhood_mean(e: Tensor, ctx: GraphContext) -> Tensor:
    """Mean of ``e`` ``(N, L)`` over each node's neighbours and itself → ``(N, L)`` (O(E·L), no N×N)."""
    src, dst = ctx.edge_index[0].to(e.device), ctx.edge_index[1].to(e.device)
    total = e.clone().index_add_(0, dst, e[src])
    count = torch.ones(e.shape[0], device=e.device, dtype=e.dtype).index_add_(
        0, dst, torch.ones_like(dst, dtype=e.dtype)
    )
    return total / count.unsqueeze(1)


def nearest_edges(ctx: GraphContext, k: int) -> Tensor:
    """Mask ``(E,)`` of the edges ``j → i`` where ``j`` is one of the ``k`` nearest graph neighbours of ``i``.

    Where the graph builder ranked each node's own picks (``ctx.rank``, kNN ``ties="graphst"``) and ``k`` is at
    most their number, those picks are taken (GraphST's read-out over ``graph_neigh``). Otherwise by distance,
    ties at equal distance to the smaller source index; that needs ``ctx.distances``.
    """
    rank = getattr(ctx, "rank", None)
    if rank is not None and rank.numel() and k <= int(rank.max()) + 1:
        return (rank >= 0) & (rank < k)
    if ctx.distances is None:
        raise DataError("graph.readout='nearest' needs the edge lengths of the spatial graph (GraphContext.distances),"
                        " which this training mode does not provide; use --set graph.readout=graph")
    src, dst = ctx.edge_index[0], ctx.edge_index[1]
    dist = ctx.distances.to(device=src.device, dtype=torch.float64)
    order = torch.argsort(src, stable=True)  # then by distance, then by target: (dst, dist, src) lexicographic
    order = order[torch.argsort(dist[order], stable=True)]
    order = order[torch.argsort(dst[order], stable=True)]
    d_sorted = dst[order]
    starts = torch.searchsorted(d_sorted, d_sorted, right=False)
    rank = torch.arange(len(order), device=src.device) - starts
    mask = torch.zeros(len(order), dtype=torch.bool, device=src.device)
    mask[order] = rank < k
    return mask


def nearest_mean(e: Tensor, ctx: GraphContext, k: int) -> Tensor:
    """Mean of ``e`` ``(N, L)`` over each node and its ``k`` nearest graph neighbours → ``(N, L)``."""
    mask = ctx.cache.get(f"nearest{k}") if hasattr(ctx, "cache") else None
    if mask is None or mask.device != e.device:
        mask = nearest_edges(ctx, k).to(e.device)
        if hasattr(ctx, "cache"):
            ctx.cache[f"nearest{k}"] = mask
    src, dst = ctx.edge_index[0].to(e.device)[mask], ctx.edge_index[1].to(e.device)[mask]
    total = e.clone().index_add_(0, dst, e[src])
    count = torch.ones(e.shape[0], device=e.device, dtype=e.dtype).index_add_(
        0, dst, torch.ones_like(dst, dtype=e.dtype)
    )
    return total / count.unsqueeze(1)


class ContrastiveGAE(nn.Module, GraphModel):
    """``x`` ``(N, D_in)`` on a spatial graph → latent ``h`` ``(N, L)`` and reconstruction ``(N, D_t)``.

    ``loss(out, target)`` → ``{"recon", "contrastive", "loss"}``. The :class:`GraphModelOutput` carries
    ``mu = z = h``, ``logvar = 0`` (deterministic encoder) and ``embedding`` = what the pipeline clusters.
    """

    shapes = {"x": "(N, D_in)", "z": "(N, L)", "recon": "(N, D_target)"}

    def __init__(self, params: ContrastiveGAEParams) -> None:
        nn.Module.__init__(self)
        GraphModel.__init__(self, params)
        self.latent_dim = params.latent
        self.d_in = 0
        self.d_target = 0
        self._perm: Tensor | None = None
        self._ready = False

    @classmethod
    def partition_support(cls, params: ContrastiveGAEParams) -> PartitionSupport:
        """Two hops; exact without dropout; negatives drawn over the whole section (``ctx.negatives``)."""
        return PartitionSupport(
            hops=2, exact=params.dropout == 0.0, negatives=params.contrastive_weight > 0,
            reason="" if params.dropout == 0.0 else "dropout masks are drawn per partition")

    def setup(self, d_in: int, d_target: int, n_nodes: int) -> None:
        """Create the encoder, decoder and discriminator for input width ``d_in`` and target ``d_target``."""
        p = self.params
        if d_in < 1 or d_target < 1:
            raise DataError(f"the graph model needs positive widths, got d_in={d_in}, d_target={d_target}")
        self.d_in, self.d_target = d_in, d_target
        self.encoder = make_conv(p.conv, d_in, p.latent, bias=p.bias)
        self.decoder = make_conv(p.conv, p.latent, d_target, bias=p.bias)
        self.discriminator = nn.Bilinear(p.latent, p.latent, 1)
        nn.init.xavier_uniform_(self.discriminator.weight)
        nn.init.zeros_(self.discriminator.bias)
        self.drop = nn.Dropout(p.dropout)
        self._ready = True

    def _check(self, x: Tensor, ctx: GraphContext) -> Tensor:
        if not self._ready:
            raise RuntimeError("ContrastiveGAE.setup(d_in, d_target, n_nodes) must be called before forward")
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise DataError(f"graph model input must be (N, {self.d_in}), got {tuple(x.shape)}")
        if ctx.n_nodes != x.shape[0]:
            raise DataError(f"the graph has {ctx.n_nodes} nodes but the features have {x.shape[0]} rows")
        return x if x.dtype == torch.float32 else x.float()

    def _layer_ctx(self, ctx: GraphContext) -> GraphContext:
        """``ctx``, or (``adjacency="graphst"``) a copy whose propagation matrix is GraphST's, cached on the context.

        The degrees are the whole graph's (``ctx.degree``) when ``ctx`` is a partition's subgraph.
        """
        if self.params.adjacency == "gcn":
            return ctx
        adj = ctx.cache.get("adj_graphst")
        if adj is None or adj.device != ctx.edge_index.device:
            adj = build_adj_norm(ctx.edge_index, ctx.n_nodes, self_loops="graphst", degree=ctx.degree)
            ctx.cache["adj_graphst"] = adj
        return dataclasses.replace(ctx, adj_norm=adj)

    def encode(self, x: Tensor, ctx: GraphContext) -> Tensor:
        """``x`` ``(N, D_in)`` → latent ``h`` ``(N, L)``."""
        return self.encoder(self.drop(self._check(x, ctx)), self._layer_ctx(ctx))

    def _summary(self, e: Tensor, ctx: GraphContext) -> Tensor:
        if self.params.readout == "nearest":
            return torch.sigmoid(F.normalize(nearest_mean(e, ctx, self.params.readout_k), p=2, dim=1))
        return torch.sigmoid(F.normalize(neighbourhood_mean(e, ctx), p=2, dim=1))

    def negative_permutation(self, n: int, device: torch.device) -> Tensor:
        """The row permutation ``(n,)`` of this step's negatives (``corruption``: fresh each step, or fixed)."""
        if self.params.corruption == "fixed":
            if self._perm is None or self._perm.numel() != n:
                self._perm = torch.randperm(n, device=device)
            return self._perm.to(device)
        return torch.randperm(n, device=device)

    def forward(self, x: Tensor, ctx: GraphContext) -> GraphModelOutput:
        """Encode, decode and (training mode only) score spots against neighbourhood summaries."""
        h = self.encode(x, ctx)
        recon = self.decoder(h, self._layer_ctx(ctx))
        out = GraphModelOutput(z=h, mu=h, logvar=torch.zeros_like(h), recon=recon)
        out.embedding = recon if self.params.embedding == "reconstruction" else h
        if self.training and self.params.contrastive_weight > 0:
            if ctx.negatives is not None:  # partition training: the rows of a permutation of the whole section
                if ctx.negatives.shape != x.shape:
                    raise DataError(f"context negatives have shape {tuple(ctx.negatives.shape)}, expected "
                                    f"{tuple(x.shape)}")
                xc = ctx.negatives
            else:
                xc = x[self.negative_permutation(x.shape[0], x.device)]
            hc = self.encoder(self.drop(xc.float()), self._layer_ctx(ctx))
            e, ec = F.relu(h), F.relu(hc)
            s, sc = self._summary(e, ctx), self._summary(ec, ctx)
            # positive = real spot vs its own neighbourhood summary; negative = shuffled spot vs it
            out.logits = torch.cat([self.discriminator(e, s), self.discriminator(ec, s),
                                    self.discriminator(ec, sc), self.discriminator(e, sc)], dim=1)
        return out

    def embed(self, x: Tensor, ctx: GraphContext) -> Tensor:
        """The clustered embedding (reconstruction or latent), eval mode, under ``inference_mode``."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                out = self.forward(x, ctx)
        finally:
            self.train(was_training)
        return out.embedding

    def loss(self, out: GraphModelOutput, target: Tensor) -> dict[str, Tensor]:
        """``recon_weight·MSE + contrastive_weight·(BCE_1 + BCE_2)``; the contrastive term only in training."""
        p = self.params
        if target.shape != out.recon.shape:
            raise DataError(
                f"reconstruction target has shape {tuple(target.shape)}, expected {tuple(out.recon.shape)}"
            )
        recon = F.mse_loss(out.recon, target.to(out.recon.dtype))
        terms: dict[str, Tensor] = {"recon": recon}
        total = p.recon_weight * recon
        logits = getattr(out, "logits", None)
        if logits is not None:
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1.0
            labels[:, 2] = 1.0
            # mean over spots of each direction's two-column BCE, summed over the two directions
            bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            contrastive = bce[:, :2].mean() + bce[:, 2:].mean()
            terms["contrastive"] = contrastive
            total = total + p.contrastive_weight * contrastive
        terms["loss"] = total
        return terms
