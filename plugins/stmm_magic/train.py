"""Mini-batch training loops of the two Magic stages (AdamW, linear warm-up + cosine per step, seeded)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from stmm_magic.data import apply_augment, augment_tiles, dihedral, draw_augment

if TYPE_CHECKING:  # pragma: no cover
    from stmm_magic.settings import MagicStageSpec
    from stmm_magic.model import MagicStage1, MagicStage2

#: Parameter names never decayed (norms, biases, embeddings, tokens, queries, temperature).
_NO_DECAY = ("bias", "norm", "embedding", "cls", "pos_embed", "cls_token", "queries", "temp", "query", "gene_bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight matrices decayed, everything in :data:`_NO_DECAY` (and 1-d tensors) not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(t in name.lower() for t in _NO_DECAY):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over *warmup* steps, then cosine from *lr* to *min_lr* at step *total*."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and len(out) > 1 and len(out[-1]) < batch_size:
        out = out[:-1]
    return out


def _optimizer(model: nn.Module, cfg: "MagicStageSpec") -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise RuntimeError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def _data_parallel(model: nn.Module, device: str) -> nn.Module:
    """*model* wrapped in ``DistributedDataParallel``: parameters and buffers taken from process 0 once, no
    buffer broadcast per step (queues and momentum copies are updated identically on every process), and
    unused parameters allowed (a fusion module without a matching objective, frozen parts)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    kwargs: dict[str, Any] = {"find_unused_parameters": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False
    else:  # pragma: no cover - older torch
        kwargs["broadcast_buffers"] = False
    if str(device).startswith("cuda"):
        kwargs["device_ids"] = [torch.cuda.current_device()]
    return DistributedDataParallel(model, **kwargs)


def train_stage1(model: "MagicStage1", tiles: torch.Tensor, tokens: torch.Tensor, train_idx: np.ndarray,
                 val_idx: np.ndarray, cfg: "MagicStageSpec", augment: str, seed: int,
                 log: Callable[[str], None] | None = None, device: str = "cpu") -> list[dict[str, float]]:
    """Train stage 1 on rows *train_idx* of ``tiles`` uint8 ``(N, 3, S, S)`` / ``tokens`` int64 ``(N, L)``.

    The dataset index of a row is its identity for the contrastive targets (queue entries of the same spot are
    positives). Returns one dict per epoch (mean losses, temperature, validation retrieval top-1 when
    *val_idx* is not empty).

    Data-parallel (a torch.distributed process group of W > 1 processes, e.g. ``stmm run magic --nproc W``):
    ``cfg.batch_size`` stays the global batch. Every process draws the same shuffle and augmentation choices
    from the shared seed, takes its contiguous block of each batch (:func:`stmm_core.distributed.context.shard`)
    and runs the model wrapped in ``DistributedDataParallel`` (gradients averaged; gloo on CPU, NCCL on GPU).
    Momentum features, spot ids and ITM similarities/tokens are gathered across processes inside the model,
    so the losses, the queues and - after every step - the weights are those of one process training on the
    whole batch, up to floating-point summation order. Dropout masks are the exception (drawn per process).
    """
    from stmm_core.distributed import context as dist_ctx

    g = torch.Generator().manual_seed(seed)
    gs = torch.Generator().manual_seed(seed + 1)  # negative sampling
    opt = _optimizer(model, cfg)
    tr = torch.as_tensor(train_idx, dtype=torch.long)
    n_batches = len(_batches(len(tr), cfg.batch_size, torch.Generator().manual_seed(0), True))
    total = max(cfg.epochs * n_batches, 1)
    warmup = int(round(cfg.warmup_epochs * n_batches))
    a = model.contrastive.params
    alpha_ramp = a.alpha_warmup_steps or n_batches
    params = [p for p in model.parameters() if p.requires_grad]
    world, rank = (dist_ctx.world_size(), dist_ctx.rank()) if dist_ctx.active() else (1, 0)
    step_fn: nn.Module = model
    if world > 1:
        smallest = min(cfg.batch_size, len(tr))
        if smallest < world:
            from stmm_core.errors import SpecError

            raise SpecError(f"stage 1 batches of {smallest} spots cannot be split over {world} processes; "
                            f"use at most {smallest} processes or a larger train.stage1.batch_size")
        step_fn = _data_parallel(model, device)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        nb = 0
        for batch in _batches(len(tr), cfg.batch_size, g, drop_last=True):
            rows = tr[batch]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
            alpha = a.alpha * min(1.0, (step + 1) / alpha_ramp)
            if world > 1:
                lo, hi = dist_ctx.shard(len(rows), rank, world)
                draw = draw_augment(len(rows), augment, g)  # the whole batch's choices, as one process draws
                x = apply_augment(tiles[rows[lo:hi]], augment, draw, slice(lo, hi)).to(device)
                own = rows[lo:hi]
                out = step_fn(x, tokens[own].to(device), own.to(device), alpha=alpha, generator=gs,
                              global_batch=len(rows))
            else:
                x = augment_tiles(tiles[rows], augment, g).to(device)
                out = step_fn(x, tokens[rows].to(device), rows.to(device), alpha=alpha, generator=gs)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            nb += 1
            for k, v in out.items():
                if k.startswith("loss") or k in ("temp", "itm_acc"):
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums = dist_ctx.all_reduce_mean_scalars(sums) if world > 1 else sums
        rec = {k: v / max(nb, 1) for k, v in sums.items()}
        rec.update(epoch=epoch + 1, seconds=time.perf_counter() - t0, lr=opt.param_groups[0]["lr"])
        if len(val_idx) > 1:
            va = torch.as_tensor(val_idx, dtype=torch.long)
            if world > 1 and len(va) >= world:  # each process embeds its block of the validation spots
                lo, hi = dist_ctx.shard(len(va), rank, world)
                emb = model.embed(tiles[va[lo:hi]], tokens[va[lo:hi]])
                emb = {k: dist_ctx.gather_batch(v.to(device), len(va)).cpu() for k, v in emb.items()}
            else:
                emb = model.embed(tiles[va], tokens[va])
            sim = emb["image"].cpu() @ emb["gene"].cpu().T
            rec["val_top1"] = float((sim.argmax(1) == torch.arange(len(va))).float().mean())
            rec["val_chance"] = 1.0 / len(va)
        history.append(rec)
        if log and rank == 0:
            extra = f" val top-1 {rec['val_top1']:.3f} (chance {rec['val_chance']:.3f})" if "val_top1" in rec else ""
            log(f"stage 1 epoch {epoch + 1}/{cfg.epochs}: loss {rec.get('loss', float('nan')):.4f} "
                f"(itc {rec.get('loss_itc', float('nan')):.4f}, itm {rec.get('loss_itm', float('nan')):.4f}), "
                f"temp {rec.get('temp', float('nan')):.4f}{extra}, {rec['seconds']:.1f} s")
    model.eval()
    return history


@torch.no_grad()
def frozen_token_bank(model: "MagicStage2", tiles: torch.Tensor, augment: str, device: str = "cpu",
                      batch_size: int = 64) -> torch.Tensor:
    """Tokens of a frozen image encoder for every tile and dihedral variant: ``(V, N, 1 + T, D)`` float32,
    V = 8 with flip augmentation, else 1. Computed once, so stage-2 epochs cost only the decoder."""
    variants = range(8) if augment != "none" else range(1)
    enc = model.image
    was = enc.training
    enc.eval()
    bank = []
    for v in variants:
        parts = [enc(dihedral(tiles[i:i + batch_size], v).to(device))["tokens"].float().cpu()
                 for i in range(0, len(tiles), batch_size)]
        bank.append(torch.cat(parts))
    enc.train(was)
    return torch.stack(bank)


def train_stage2(model: "MagicStage2", tiles: torch.Tensor, targets: torch.Tensor, train_idx: np.ndarray,
                 val_idx: np.ndarray, cfg: "MagicStageSpec", augment: str, seed: int,
                 log: Callable[[str], None] | None = None, device: str = "cpu") -> list[dict[str, float]]:
    """Train the decoder (MSE on log1p-normalised targets ``(N, G)``); keep the epoch with the lowest
    validation MSE when *val_idx* is not empty (else the last). Returns one dict per epoch.

    With a frozen image encoder the tokens of all tiles under the 8 dihedral transforms are computed once
    (:func:`frozen_token_bank`) and each step draws one variant per tile (brightness/contrast jitter is then
    not applied); with a trainable encoder tiles are augmented on the fly.
    """
    g = torch.Generator().manual_seed(seed + 2)
    frozen = not any(p.requires_grad for p in model.image.parameters())
    bank = frozen_token_bank(model, tiles, augment, device) if frozen else None
    opt = _optimizer(model, cfg)
    tr = torch.as_tensor(train_idx, dtype=torch.long)
    n_batches = len(_batches(len(tr), cfg.batch_size, torch.Generator().manual_seed(0), False))
    total = max(cfg.epochs * n_batches, 1)
    warmup = int(round(cfg.warmup_epochs * n_batches))
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        total_loss, nb = 0.0, 0
        for batch in _batches(len(tr), cfg.batch_size, g, drop_last=False):
            rows = tr[batch]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
            if bank is not None:
                v = torch.randint(0, bank.shape[0], (len(rows),), generator=g)
                pred = model.decoder(bank[v, rows].to(device))
            else:
                pred = model(augment_tiles(tiles[rows], augment, g).to(device))
            loss = nn.functional.mse_loss(pred, targets[rows].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            nb += 1
            total_loss += float(loss.detach())
        rec: dict[str, float] = {"epoch": epoch + 1, "loss": total_loss / max(nb, 1),
                                 "seconds": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]}
        if len(val_idx):
            va = torch.as_tensor(val_idx, dtype=torch.long)
            model.eval()
            with torch.no_grad():
                if bank is not None:
                    pv = torch.cat([model.decoder(bank[0, va[i:i + 64]].to(device)).cpu()
                                    for i in range(0, len(va), 64)])
                else:
                    pv = model.predict(tiles[va]).cpu()
            rec["val_mse"] = float(nn.functional.mse_loss(pv, targets[va]))
            if best is None or rec["val_mse"] < best[0]:
                best = (rec["val_mse"], {k: v.detach().clone() for k, v in model.decoder.state_dict().items()})
        history.append(rec)
        if log:
            extra = f", val MSE {rec['val_mse']:.4f}" if "val_mse" in rec else ""
            log(f"stage 2 epoch {epoch + 1}/{cfg.epochs}: MSE {rec['loss']:.4f}{extra}, {rec['seconds']:.1f} s")
    if best is not None:
        model.decoder.load_state_dict(best[1])
    model.eval()
    return history
