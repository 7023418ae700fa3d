"""Magic stage 1 on a tiny synthetic dataset, run by tests/test_magic_ddp.py under torchrun (data-parallel,
DistributedDataParallel over gloo) and directly (one process, the reference). Writes the per-epoch losses,
every step's losses and the final weights, momentum weights and queues of its process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

TINY = {
    "image.model": "test_vit", "image.img_size": 32,
    "gene.n_genes": 12, "gene.dim": 16, "gene.depth": 1, "gene.heads": 2, "gene.dim_head": 8, "gene.out_dim": 16,
    "contrastive.embed_dim": 16, "contrastive.queue_size": 24,
    "fusion.dim": 16, "fusion.heads": 2, "fusion.ff_mult": 2, "fusion.dropout": 0.0,
    "train.stage1.epochs": 2, "train.stage1.batch_size": 8, "train.stage1.lr": 1e-3,
}


def run(out: Path) -> None:
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.distributed import context as dist_ctx
    from stmm_core.seeding import seed_everything
    from stmm_magic.data import train_val_split
    from stmm_magic.pipeline import build_stage1
    from stmm_magic.train import train_stage1

    torch.set_num_threads(1)
    dist_ctx.init("cpu")
    spec = compose_spec("magic-vit", None, TINY)
    n, n_genes = 46, 12
    rng = np.random.default_rng(0)
    tiles = torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    tokens = torch.from_numpy(rng.integers(0, 6, (n, n_genes)).astype(np.int64))
    train_idx, val_idx = train_val_split([n], 0.15, 0)  # 39 training spots: 4 batches of 8 per epoch (last dropped)
    seed_everything(0)
    model = build_stage1(spec, [f"g{i}" for i in range(n_genes)])
    steps: list[dict[str, float]] = []
    forward = model.forward

    def recording_forward(*args, **kwargs):  # every step's losses of this process (before the rank average)
        res = forward(*args, **kwargs)
        steps.append({k: float(v.detach()) for k, v in res.items() if k.startswith("loss")})
        return res

    model.forward = recording_forward
    hist = train_stage1(model, tiles, tokens, train_idx, val_idx, spec.train.stage1, "flips+color", seed=0)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    rank, world = dist_ctx.rank(), dist_ctx.world_size()
    np.savez(out / f"magic_rank{rank}_world{world}.npz",
             epoch_loss=np.array([h["loss"] for h in hist]), epoch_itc=np.array([h["loss_itc"] for h in hist]),
             epoch_itm=np.array([h["loss_itm"] for h in hist]), val_top1=np.array([h["val_top1"] for h in hist]),
             step_loss=np.array([s["loss"] for s in steps]),
             **{f"w:{k}": v for k, v in state.items()})
    dist_ctx.finish()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
    from stmm_core.distributed.context import exit_now

    exit_now(0)
