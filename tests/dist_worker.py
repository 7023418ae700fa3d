"""Run under torchrun by tests/test_distributed.py (and directly, single process, for the reference)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch


class MeanStdEncoder:
    """A tiny deterministic image encoder: per-channel mean and std of each tile → (B, 6)."""

    out_dim = 6

    class params:  # noqa: N801 - attribute namespace like a pydantic model
        input_size = 32
        batch_size = 16

    class preprocessing:  # noqa: N801
        input_size = 32

    def identity(self) -> str:
        return "test-mean-std"

    def to(self, device):
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def run(out: Path) -> None:
    from stmm_core.data.readers import read_section
    from stmm_core.distributed import context as dist_ctx
    from stmm_core.pipeline.image_features import encode_section
    from stmm_core.pipeline.minibatch import embed_partitioned, make_partitions, receptive_hops, train_partitioned
    from stmm_core.pipeline.target import reconstruction_target
    from stmm_core.spec import TileSpec
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_fusion.attention import CrossAttentionFusion
    from stmm_fusion.params import AttentionFusionParams
    from stmm_graph.builders import RadiusGraph
    from stmm_graph.params import RadiusGraphParams, VGAEParams
    from stmm_graph.vgae import VGAE

    torch.set_num_threads(1)
    dist_ctx.init("cpu")
    rank = dist_ctx.rank()
    h5 = out / "section.h5ad"
    if not h5.exists() and rank == 0:
        make_synthetic_adata(n_spots=300, n_genes=40, n_domains=3, seed=0, image_scale=0.2).write_h5ad(h5)
    if dist_ctx.is_distributed():
        torch.distributed.barrier()
    section = read_section(h5)
    feats, _ = encode_section(section, MeanStdEncoder(), TileSpec(), cache=None, progress=False)
    graph = RadiusGraph(RadiusGraphParams()).build(section.coords)
    torch.manual_seed(0)
    img = torch.from_numpy(np.asarray(feats, dtype=np.float32))
    gene = torch.from_numpy(np.log1p(section.counts.toarray()[:, :10]).astype(np.float32))
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2))
    fusion.setup(img.shape[1], gene.shape[1])
    model = VGAE(VGAEParams(hidden=[16], latent=4))
    target = reconstruction_target("inputs", fusion, img, gene)
    model.setup(fusion.out_dim, target.shape[1], section.n_spots)
    params = list(fusion.parameters()) + list(model.parameters())
    opt = torch.optim.Adam(params, lr=0.01)
    parts = make_partitions(section.coords, graph.edge_index, section.n_spots, 80, receptive_hops(fusion, model))
    torch.randn_like = torch.zeros_like  # no VAE noise: single- and multi-process runs draw different noise
    hist = train_partitioned(fusion, model, img, gene, target, parts, opt, params, epochs=3, grad_clip=5.0,
                             accumulate=True, seed=0, lr=0.01)
    emb = embed_partitioned(fusion, model, img, gene, parts)
    np.savez(out / f"rank{rank}_world{dist_ctx.world_size()}.npz", feats=np.asarray(feats), emb=emb,
             loss=np.array([h["loss"] for h in hist]), n_parts=len(parts))
    dist_ctx.finish()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
    from stmm_core.distributed.context import exit_now

    exit_now(0)
