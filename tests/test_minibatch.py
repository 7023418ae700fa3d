"""Mini-batch training over spatial partitions: the halo makes core rows, loss and gradients exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stmm_core.errors import SpecError
from stmm_core.pipeline.minibatch import (
    embed_partitioned,
    grid_partition,
    make_partitions,
    normalised_adjacency,
    receptive_hops,
)
from stmm_core.pipeline.target import reconstruction_target
from stmm_fusion.attention import CrossAttentionFusion
from stmm_fusion.params import AttentionFusionParams
from stmm_graph.builders import RadiusGraph
from stmm_graph.layers import build_adj_norm, graph_context
from stmm_graph.params import RadiusGraphParams, VGAEParams
from stmm_graph.vgae import VGAE


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _problem(side: int = 24, seed: int = 0, conv: str = "gcn"):
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(float) * 10.0 + rng.uniform(0, 1, (side * side, 2))
    graph = RadiusGraph(RadiusGraphParams(radius=15.0)).build(coords)
    n = len(coords)
    img = torch.from_numpy(rng.normal(size=(n, 6)).astype(np.float32))
    gene = torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32))
    torch.manual_seed(seed)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2))
    fusion.setup(6, 5)
    model = VGAE(VGAEParams(conv=conv, hidden=[16], latent=4, kl_weight=0.1))
    target = reconstruction_target("inputs", fusion, img, gene)
    model.setup(fusion.out_dim, target.shape[1], n)
    return coords, graph, img, gene, fusion, model, target


def test_grid_partition_covers_every_spot_with_balanced_cells():
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 1000, size=(5000, 2))
    ids = grid_partition(coords, 500)
    assert ids.shape == (5000,) and ids.min() == 0
    counts = np.bincount(ids)
    assert 6 <= len(counts) <= 16 and counts.min() > 0
    assert grid_partition(coords, 10_000).max() == 0


def test_normalised_adjacency_matches_the_gcn_layer():
    coords, graph, *_ = _problem(side=8)
    a = normalised_adjacency(graph.edge_index, graph.n_nodes).toarray()
    b = build_adj_norm(torch.as_tensor(graph.edge_index), graph.n_nodes).to_dense().numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_hops_are_declared_and_global_attention_refused():
    *_, fusion, model, _ = _problem(side=4)
    assert receptive_hops(fusion, model) == 1 + 4  # attention + (encoder, μ/log-variance heads, 2 decoder layers)
    glob = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, scope="global"))
    with pytest.raises(SpecError, match="scope=neighbourhood"):
        receptive_hops(glob, model)


@pytest.mark.parametrize("conv", ["gcn", "sage"])
def test_partitioned_embedding_equals_full_batch(conv):
    coords, graph, img, gene, fusion, model, _ = _problem(conv=conv)
    ctx = graph_context(graph)
    fusion.eval(), model.eval()
    with torch.no_grad():
        full = model(fusion(img, gene, ctx), ctx).mu.numpy()
    parts = make_partitions(coords, graph.edge_index, graph.n_nodes, 100, receptive_hops(fusion, model))
    assert len(parts) >= 4 and sum(p.n_core for p in parts) == graph.n_nodes
    got = embed_partitioned(fusion, model, img, gene, parts)
    np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-5)
    # a halo one hop too small is not exact: the test can fail
    short = make_partitions(coords, graph.edge_index, graph.n_nodes, 100, 1)
    assert np.abs(embed_partitioned(fusion, model, img, gene, short) - full).max() > 1e-3


def _full_and_partitioned_gradients(shared_noise: bool):
    """Gradients of the full-batch loss and of the partition losses (each weighted by its core share), summed.

    ``shared_noise=False``: eval mode (no VAE noise, the loss is deterministic). ``True``: training mode with the
    noise drawn once per spot (``ctx.noise``) and each partition reading its rows of it.
    Returns ``(full, partitioned, fusion, model, img, gene, ctx, eps)``.
    """
    from stmm_core.pipeline.minibatch import _core_output

    coords, graph, img, gene, fusion, model, target = _problem()
    params = list(fusion.parameters()) + list(model.parameters())
    ctx = graph_context(graph)
    eps = None
    if shared_noise:
        fusion.train(), model.train()
        eps = torch.randn(graph.n_nodes, model.latent_dim)
        ctx.noise = eps
    else:
        fusion.eval(), model.eval()
    model.loss(model(fusion(img, gene, ctx), ctx), target)["loss"].backward()
    full = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    parts = make_partitions(coords, graph.edge_index, graph.n_nodes, 150, receptive_hops(fusion, model))
    for part in parts:
        idx = torch.from_numpy(part.nodes)
        if eps is not None:
            part.ctx.noise = eps[idx]
        out = model(fusion(img[idx], gene[idx], part.ctx), part.ctx)
        loss = model.loss(_core_output(out, part.n_nodes, part.n_core), target[idx[: part.n_core]])["loss"]
        (loss * part.n_core / graph.n_nodes).backward()
    return full, [p.grad for p in params], fusion, model, img, gene, ctx, eps


def test_accumulated_partition_gradient_equals_full_batch_gradient():
    full, parted, *_ = _full_and_partitioned_gradients(shared_noise=False)
    for g_part, g_full in zip(parted, full):
        torch.testing.assert_close(g_part, g_full, rtol=1e-4, atol=1e-6)


def test_fit_graph_fusion_in_partition_mode(tmp_path):
    import anndata as ad

    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.data.readers import read_section
    from stmm_core.metrics import clustering_scores
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.testing.synthetic import make_synthetic_adata

    path = tmp_path / "s.h5ad"
    make_synthetic_adata(n_spots=900, n_genes=120, n_domains=3, seed=0, image=False).write_h5ad(path)
    section = read_section(path)
    sets = {"gene.n_top_genes": 100, "gene.pca": 10, "fusion.dim": 16, "graph.hidden": [32], "graph.latent": 8,
            "train.epochs": 30, "train.lr": 0.01, "domains.refine_neighbors": 0}
    res = {}
    for batch in ("full", "partition"):
        spec = compose_spec("stereomm-expression", None, {**sets, "train.batch": batch, "train.partition_size": 250})
        r = fit_graph_fusion(spec, section, n_domains=3, progress=False)
        res[batch] = r
    info = res["partition"].info["batch"]
    assert info["mode"] == "partition" and info["partitions"] >= 3 and info["hops"] >= 4
    assert "batch" not in res["full"].info or res["full"].info["batch"]["mode"] == "full"
    truth = ad.read_h5ad(path).obs["domain"].to_numpy()
    ari = {b: clustering_scores(truth, r.labels)["ari"] for b, r in res.items()}
    assert ari["partition"] > 0.5 and abs(ari["partition"] - ari["full"]) < 0.15, ari
    assert len(res["partition"].history) == 30


def test_shared_noise_makes_training_mode_partition_gradient_equal_full_batch():
    """With the VAE noise drawn once per spot (ctx.noise), partitions reproduce the full-batch training gradient."""
    full, parted, fusion, model, img, gene, ctx, eps = _full_and_partitioned_gradients(shared_noise=True)
    for g_part, g_full in zip(parted, full):
        assert torch.allclose(g_part, g_full, atol=1e-5, rtol=1e-4)
    with pytest.raises(Exception, match="noise has shape"):
        ctx.noise = eps[:, :2]
        model(fusion(img, gene, ctx), ctx)
