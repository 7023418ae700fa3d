"""Image–gene matching (ITM): does this image tile belong with this expression profile?

For every gene profile one negative image, and for every image one negative profile, is drawn with
probability ``softmax(similarity / temperature)`` over the other spots of the batch (ALBEF's hard-negative
mining; the published code used un-tempered cosines, i.e. near-uniform "hard" negatives). The fusion module
scores the B positive and 2B negative pairs; a linear head gives match / no-match logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stmm_core.interfaces import Objective
from stmm_magic.params import ItmParams


def negative_weights(sim: torch.Tensor, idx: torch.Tensor, hard: bool = True) -> torch.Tensor:
    """Sampling weights ``(B, B)``, rows summing to 1 over the negatives (0 for rows without any).

    ``hard``: ``softmax(sim)`` restricted to pairs from different spots (*sim* is already divided by the
    temperature); else uniform over them. Pairs from the same spot (the diagonal included) get weight 0.
    Restricting before the softmax equals ALBEF's zero-and-renormalise, without underflow at low temperature.
    """
    same = idx.view(-1, 1) == idx.view(1, -1)
    logits = sim.float() if hard else torch.zeros_like(sim, dtype=torch.float32)
    w = logits.masked_fill(same, float("-inf")).softmax(dim=1)
    return torch.nan_to_num(w, nan=0.0)


def sample_negatives(sim: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None,
                     hard: bool = True) -> torch.Tensor:
    """One negative column per row of *sim* ``(B, B)``, drawn ∝ :func:`negative_weights`; int64 ``(B,)``.

    Rows without any valid negative (every item from the same spot) get −1.
    """
    w = negative_weights(sim, idx, hard).cpu()
    ok = w.sum(1) > 0
    out = torch.full((sim.shape[0],), -1, dtype=torch.long)
    if ok.any():
        out[ok] = torch.multinomial(w[ok], 1, generator=generator).view(-1)
    return out.to(sim.device)


class ImageGeneMatching(nn.Module, Objective):
    """``forward(fusion, img_tokens (B, T, D_img), gene_tokens (B, L, D_gene), sim_i2g, sim_g2i, idx)`` →
    ``{"loss", "loss_itm", "itm_acc"}``; logits ``(3B, 2)`` for B positives then 2B negatives."""

    shapes = {"img_tokens": "(B, T, D_img)", "gene_tokens": "(B, L, D_gene)", "logits": "(3B, 2)"}

    def __init__(self, params: ItmParams) -> None:
        nn.Module.__init__(self)
        Objective.__init__(self, params)
        self.head: nn.Linear | None = None

    def setup(self, fusion_dim: int) -> "ImageGeneMatching":
        self.head = nn.Linear(fusion_dim, 2)
        return self

    def score(self, fusion: nn.Module, img_tokens: torch.Tensor, gene_tokens: torch.Tensor) -> torch.Tensor:
        """Match probability ``(B,)`` of aligned pairs (image b with gene profile b)."""
        return self.head(fusion(img_tokens, gene_tokens)).softmax(-1)[:, 1]

    def forward(self, fusion: nn.Module, img_tokens: torch.Tensor, gene_tokens: torch.Tensor,
                sim_i2g: torch.Tensor, sim_g2i: torch.Tensor, idx: torch.Tensor,
                generator: torch.Generator | None = None, global_batch: int | None = None) -> dict[str, torch.Tensor]:
        """Positives and drawn negatives of the batch through *fusion*; see the class docstring.

        Data-parallel (``global_batch=n``, this process holding a block of b rows, ``sim_*`` ``(b, n)``): the
        similarity rows and ids of all blocks are gathered, negatives are drawn over the whole batch with the
        shared *generator* (every process draws the same ones, as one process would), a process scores the
        pairs of its own rows, taking negative tokens from the gathered (differentiable) tokens of the batch,
        and its loss is weighted so that the mean over processes is the whole batch's mean.
        """
        b = img_tokens.shape[0]
        hard = self.params.hard_negatives
        if global_batch is None:
            with torch.no_grad():
                neg_img = sample_negatives(sim_g2i, idx, generator, hard)  # for each gene profile: an image
                neg_gene = sample_negatives(sim_i2g, idx, generator, hard)  # for each image: a gene profile
            keep1, keep2 = neg_img >= 0, neg_gene >= 0
            imgs = torch.cat([img_tokens, img_tokens[neg_img[keep1]], img_tokens[keep2]], 0)
            genes = torch.cat([gene_tokens, gene_tokens[keep1], gene_tokens[neg_gene[keep2]]], 0)
            weight, n_pairs = 1.0, None
        else:
            from stmm_core.distributed.context import gather_batch, rank, shard, world_size

            n = int(global_batch)
            lo, hi = shard(n, rank(), world_size())
            with torch.no_grad():
                idx_all = gather_batch(idx.view(-1), n)
                neg_img_all = sample_negatives(gather_batch(sim_g2i, n), idx_all, generator, hard)
                neg_gene_all = sample_negatives(gather_batch(sim_i2g, n), idx_all, generator, hard)
            neg_img, neg_gene = neg_img_all[lo:hi], neg_gene_all[lo:hi]
            keep1, keep2 = neg_img >= 0, neg_gene >= 0
            img_all = gather_batch(img_tokens, n, grad=True)
            gene_all = gather_batch(gene_tokens, n, grad=True)
            imgs = torch.cat([img_tokens, img_all[neg_img[keep1]], img_tokens[keep2]], 0)
            genes = torch.cat([gene_tokens, gene_tokens[keep1], gene_all[neg_gene[keep2]]], 0)
            n_pairs = n + int((neg_img_all >= 0).sum()) + int((neg_gene_all >= 0).sum())  # whole batch
            weight = len(imgs) * world_size() / n_pairs
        logits = self.head(fusion(imgs, genes))
        labels = torch.cat([torch.ones(b, dtype=torch.long),
                            torch.zeros(int(keep1.sum()) + int(keep2.sum()), dtype=torch.long)]).to(logits.device)
        loss = F.cross_entropy(logits, labels) * weight
        acc = (logits.argmax(-1) == labels).float().mean() * weight
        return {"loss": self.params.weight * loss, "loss_itm": loss.detach(), "itm_acc": acc.detach(),
                "neg_img": neg_img, "neg_gene": neg_gene}
