"""Training the two projection heads on frozen per-spot features (seeded, CPU-fast, deterministic)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from stmm_bleep.heads import BleepHeads, contrastive_loss
from stmm_bleep.params import BleepTrainParams


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation row indices of *n* spots (random per seed; no validation below 10 spots)."""
    perm = np.random.default_rng(seed + 17).permutation(n)
    n_val = int(round(val_fraction * n)) if n >= 10 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_heads(img: np.ndarray, gene: np.ndarray, p: BleepTrainParams, *,
                log: Callable[[str], None] | None = None) -> tuple[BleepHeads, list[dict[str, Any]]]:
    """Train :class:`BleepHeads` on image features ``img (N, D_img)`` and gene features ``gene (N, D_gene)``.

    The caller seeds torch before this call (the heads' initialisation is the first draw). Mini-batches of
    ``p.batch_size`` spots come from a generator seeded by ``p.seed``; with validation spots the heads of the
    epoch with the lowest validation loss are returned. Returns the heads (eval mode, CPU) and the per-epoch
    history ``[{"epoch", "loss", "val_loss"}]``.
    """
    if img.shape[0] != gene.shape[0]:
        raise ValueError(f"image features {img.shape} and gene features {gene.shape} differ in spots")
    n = img.shape[0]
    heads = BleepHeads(img.shape[1], gene.shape[1], p.embed_dim, p.dropout)
    tr, va = split(n, p.val_fraction, p.seed)
    x_img, x_gene = torch.from_numpy(np.ascontiguousarray(img, np.float32)), \
        torch.from_numpy(np.ascontiguousarray(gene, np.float32))
    opt = torch.optim.AdamW(heads.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    gen = torch.Generator().manual_seed(int(p.seed))
    soft = p.loss == "bleep"
    batch = min(p.batch_size, len(tr))
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor] | None] = (float("inf"), None)
    for epoch in range(p.epochs):
        heads.train()
        order = torch.as_tensor(tr)[torch.randperm(len(tr), generator=gen)]
        total, seen = 0.0, 0
        for lo in range(0, len(order), batch):
            idx = order[lo:lo + batch]
            if len(idx) < 2:  # one spot has no negative
                continue
            loss = contrastive_loss(heads.embed_image(x_img[idx]), heads.embed_gene(x_gene[idx]), p.temperature, soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(seen, 1)}
        if len(va) >= 2:
            heads.eval()
            with torch.no_grad():
                vi = torch.as_tensor(va)
                rec["val_loss"] = float(contrastive_loss(heads.embed_image(x_img[vi]), heads.embed_gene(x_gene[vi]),
                                                         p.temperature, soft))
            if rec["val_loss"] < best[0]:
                best = (rec["val_loss"], copy.deepcopy(heads.state_dict()))
        history.append(rec)
        if log is not None and (epoch + 1) % max(1, p.epochs // 5) == 0:
            log(f"epoch {epoch + 1}/{p.epochs}: loss {rec['loss']:.4f}"
                + (f", validation {rec['val_loss']:.4f}" if "val_loss" in rec else ""))
    if best[1] is not None:
        heads.load_state_dict(best[1])
    heads.eval()
    return heads, history
