"""Image–gene contrastive objective with momentum distillation (ALBEF's ITC, applied to image ↔ expression).

Given pooled image features ``(B, D_img)`` and pooled gene features ``(B, D_gene)`` from the online encoders
and the same from the momentum encoders:

* linear projection heads map both to ``embed_dim`` and L2-normalise (a linear head: no ReLU/dropout on the
  embedding, unlike the published code);
* similarities are divided by a learnable temperature clamped to ``[temperature_min, temperature_max]``;
* candidates are the momentum features of the batch plus a queue of the last K momentum features; every
  candidate coming from the same spot (same dataset index) counts as a positive;
* targets are ``α·softmax(momentum similarities) + (1 − α)·ground truth`` (distillation from the momentum
  model's soft targets), and the loss is the symmetric soft cross-entropy.

Data-parallel training (``global_batch`` given, several processes): each process holds a block of the global
batch; the momentum features and spot ids of all blocks are gathered (in rank order) so every process scores
its rows against the same candidates as a single process with the whole batch, and every process pushes the
same gathered features into its queue (the queues stay identical). The returned loss is scaled so that the
mean over processes - what DistributedDataParallel's gradient average sees - is the whole batch's mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stmm_core.interfaces import Objective
from stmm_magic.momentum import FeatureQueue, ema_update, momentum_copy
from stmm_magic.params import AlbefContrastiveParams


class AlbefContrastive(nn.Module, Objective):
    """Projection heads + temperature + queues + momentum heads; see the module docstring.

    ``forward(img, gene, img_m, gene_m, idx, alpha)`` with ``img``/``img_m`` ``(B, D_img)``, ``gene``/``gene_m``
    ``(B, D_gene)``, ``idx`` ``(B,)`` int64 spot ids → dict with ``loss`` (weighted), ``loss_itc``, ``sim_i2g``
    and ``sim_g2i`` (``(B, B)`` tempered in-batch similarities, detached, for ITM negative mining) and ``temp``.
    Data-parallel: ``global_batch=n`` with this process's block of b rows; the similarities are then ``(b, n)``.
    """

    shapes = {"img": "(B, D_img)", "gene": "(B, D_gene)", "idx": "(B,) int64", "sim_i2g": "(B, B)"}

    def __init__(self, params: AlbefContrastiveParams) -> None:
        nn.Module.__init__(self)
        Objective.__init__(self, params)
        self.temp = nn.Parameter(torch.tensor(float(params.temperature)))
        self.image_proj: nn.Linear | None = None
        self.gene_proj: nn.Linear | None = None

    def setup(self, d_img: int, d_gene: int) -> "AlbefContrastive":
        """Build the heads and their momentum copies, and the queues."""
        e = self.params.embed_dim
        self.image_proj = nn.Linear(d_img, e)
        self.gene_proj = nn.Linear(d_gene, e)
        self.image_proj_m = momentum_copy(self.image_proj)
        self.gene_proj_m = momentum_copy(self.gene_proj)
        self.image_queue = FeatureQueue(self.params.queue_size, e)
        self.gene_queue = FeatureQueue(self.params.queue_size, e)
        return self

    def momentum_update(self) -> None:
        ema_update(self.image_proj, self.image_proj_m, self.params.momentum)
        ema_update(self.gene_proj, self.gene_proj_m, self.params.momentum)

    def embed_image(self, img: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``(B, D_img)`` → unit embeddings ``(B, embed_dim)``."""
        return F.normalize(self.image_proj(img), dim=-1)

    def embed_gene(self, gene: torch.Tensor) -> torch.Tensor:
        """Pooled gene features ``(B, D_gene)`` → unit embeddings ``(B, embed_dim)``."""
        return F.normalize(self.gene_proj(gene), dim=-1)

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        self.temp.clamp_(self.params.temperature_min, self.params.temperature_max)

    def forward(self, img: torch.Tensor, gene: torch.Tensor, img_m: torch.Tensor, gene_m: torch.Tensor,
                idx: torch.Tensor, alpha: float | None = None,
                global_batch: int | None = None) -> dict[str, torch.Tensor]:
        from stmm_core.distributed.context import gather_batch, rank, shard, world_size

        alpha = self.params.alpha if alpha is None else float(alpha)
        self.clamp_temperature()
        b = img.shape[0]
        n = b if global_batch is None else int(global_batch)  # rows of the whole (all-process) batch
        image_feat, gene_feat = self.embed_image(img), self.embed_gene(gene)
        idx = idx.view(-1, 1)
        with torch.no_grad():
            own_m = (F.normalize(self.image_proj_m(img_m), dim=-1), F.normalize(self.gene_proj_m(gene_m), dim=-1))
            if global_batch is not None:  # every process's block, in rank order (the whole batch)
                image_feat_m, gene_feat_m = (gather_batch(t, n) for t in own_m)
                idx_batch = gather_batch(idx.view(-1), n).view(-1, 1)
            else:
                image_feat_m, gene_feat_m = own_m
                idx_batch = idx
            idx_all = torch.cat([idx_batch.t(), self.image_queue.idx.view(1, -1)], dim=1)  # (1, B + K)
            pos = (idx == idx_all).float()
            sim_targets = pos / pos.sum(1, keepdim=True)
            image_all = torch.cat([image_feat_m, self.image_queue.feats], 0)  # (B + K, e)
            gene_all = torch.cat([gene_feat_m, self.gene_queue.feats], 0)
            if alpha > 0:
                sim_i2g_m = own_m[0] @ gene_all.t() / self.temp
                sim_g2i_m = own_m[1] @ image_all.t() / self.temp
                t_i2g = alpha * sim_i2g_m.softmax(1) + (1 - alpha) * sim_targets
                t_g2i = alpha * sim_g2i_m.softmax(1) + (1 - alpha) * sim_targets
            else:
                t_i2g = t_g2i = sim_targets
        sim_i2g = image_feat @ gene_all.t() / self.temp  # (B, B + K)
        sim_g2i = gene_feat @ image_all.t() / self.temp
        loss_i2g = -(F.log_softmax(sim_i2g, dim=1) * t_i2g).sum(1).mean()
        loss_g2i = -(F.log_softmax(sim_g2i, dim=1) * t_g2i).sum(1).mean()
        loss_itc = 0.5 * (loss_i2g + loss_g2i)
        if n != b:  # a block of the batch: weigh it so that the mean over processes is the batch mean
            lo, hi = shard(n, rank(), world_size())
            if hi - lo != b:
                raise RuntimeError(f"process {rank()} holds {b} rows of a batch of {n}, expected {hi - lo}")
            loss_itc = loss_itc * (b * world_size() / n)
        if self.training:
            self.image_queue.push(image_feat_m, idx_batch.view(-1))
            self.gene_queue.push(gene_feat_m, idx_batch.view(-1))
        return {
            "loss": self.params.weight * loss_itc,
            "loss_itc": loss_itc.detach(),
            "sim_i2g": sim_i2g[:, :n].detach(),
            "sim_g2i": sim_g2i[:, :n].detach(),
            "temp": self.temp.detach().clone(),
        }
