"""The contrastive graph autoencoder (GraphST family): shapes, loss terms, learning, the graphst recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from stmm_core.errors import DataError
from stmm_core.interfaces import GraphContext
from stmm_graph.builders import KnnGraph
from stmm_graph.contrastive_gae import ContrastiveGAE, neighbourhood_mean
from stmm_graph.params import ContrastiveGAEParams, KnnGraphParams


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _domains_section(side: int = 20, n_feat: int = 40, seed: int = 0):
    """Square grid with 4 quadrant domains; each domain shifts a different block of noisy features."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(float) * 100.0
    truth = (xs.ravel() >= side // 2).astype(int) * 2 + (ys.ravel() >= side // 2).astype(int)
    x = rng.normal(size=(side * side, n_feat)).astype(np.float32)
    for k in range(4):
        x[truth == k, k * 5:(k + 1) * 5] += 0.8
    graph = KnnGraph(KnnGraphParams(k=4)).build(coords, None)
    ctx = GraphContext(edge_index=graph.torch_edge_index("cpu"), n_nodes=len(coords))
    return torch.from_numpy(x), ctx, truth


def test_neighbourhood_mean_matches_dense():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    ctx = GraphContext(edge_index=ei, n_nodes=3)
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    a = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.float32)
    dense = (a @ e) / a.sum(1, keepdim=True)
    assert torch.allclose(neighbourhood_mean(e, ctx), dense)


def test_shapes_loss_terms_and_eval():
    x, ctx, _ = _domains_section(side=8)
    torch.manual_seed(0)
    m = ContrastiveGAE(ContrastiveGAEParams(latent=16))
    m.setup(x.shape[1], x.shape[1], x.shape[0])
    out = m(x, ctx)
    assert out.mu.shape == (64, 16) and out.recon.shape == (64, 40) and out.logits.shape == (64, 4)
    terms = m.loss(out, x)
    assert set(terms) == {"recon", "contrastive", "loss"}
    assert torch.isclose(terms["loss"], 10 * terms["recon"] + terms["contrastive"])
    terms["loss"].backward()
    assert m.discriminator.weight.grad is not None and m.discriminator.weight.grad.abs().sum() > 0
    m.eval()
    out = m(x, ctx)
    assert out.logits is None and out.clustered() is out.embedding and out.embedding.shape == (64, 40)
    assert torch.equal(m.embed(x, ctx), m.embed(x, ctx))  # deterministic in eval mode
    lat = ContrastiveGAE(ContrastiveGAEParams(latent=16, embedding="latent"))
    lat.setup(40, 40, 64)
    assert lat.embed(x, ctx).shape == (64, 16)
    with pytest.raises(DataError, match="input must be"):
        m(x[:, :5], ctx)
    with pytest.raises(DataError, match="target has shape"):
        m.loss(m(x, ctx), x[:, :5])


def test_graphst_adjacency_and_no_bias_reach_the_layers():
    """adjacency=graphst propagates with D^-1/2 A D^-1/2 + I (checked against a dense product); bias=False leaves
    the encoder and decoder without bias terms; the pipeline's own GCN adjacency on the context is untouched."""
    from stmm_graph.layers import build_adj_norm

    x, ctx, _ = _domains_section(side=6)
    torch.manual_seed(0)
    m = ContrastiveGAE(ContrastiveGAEParams(latent=8, adjacency="graphst", bias=False))
    m.setup(x.shape[1], x.shape[1], x.shape[0])
    assert m.encoder.bias is None and m.decoder.bias is None
    m.eval()
    adj = build_adj_norm(ctx.edge_index, ctx.n_nodes, self_loops="graphst").to_dense()
    h = adj @ (x @ m.encoder.weight)
    torch.testing.assert_close(m.encode(x, ctx), h)
    torch.testing.assert_close(m.embed(x, ctx), adj @ (h @ m.decoder.weight))
    gcn = ContrastiveGAE(ContrastiveGAEParams(latent=8, bias=False))
    gcn.setup(x.shape[1], x.shape[1], x.shape[0])
    gcn.load_state_dict(m.state_dict())
    assert not torch.allclose(gcn.encode(x, ctx), h)
    assert ctx.adj_norm is None or not torch.allclose(ctx.adj_norm.to_dense(), adj)


def test_contrastive_term_learns_to_separate_real_from_shuffled():
    x, ctx, _ = _domains_section()
    torch.manual_seed(0)
    m = ContrastiveGAE(ContrastiveGAEParams(latent=16, recon_weight=0.0))
    m.setup(x.shape[1], x.shape[1], x.shape[0])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = m.loss(m(x, ctx), x)["contrastive"]
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    assert first > 1.2  # ≈ 2·ln 2 = 1.386 at chance
    assert float(loss.detach()) < 0.75 * first


def test_embedding_recovers_spatial_domains():
    from stmm_tasks.clustering import GMMClustering
    from stmm_tasks.params import GMMParams

    x, ctx, truth = _domains_section()
    torch.manual_seed(0)
    m = ContrastiveGAE(ContrastiveGAEParams(latent=16))
    m.setup(x.shape[1], x.shape[1], x.shape[0])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        m.loss(m(x, ctx), x)["loss"].backward()
        opt.step()
    emb = m.embed(x, ctx).numpy()
    raw = GMMClustering(GMMParams(pca=10)).run(x.numpy(), 4, 0)
    got = GMMClustering(GMMParams(pca=10)).run(emb, 4, 0)
    assert adjusted_rand_score(truth, got) > 0.8
    assert adjusted_rand_score(truth, got) > adjusted_rand_score(truth, raw) + 0.2


def test_graphst_recipe_fits_end_to_end(tmp_path):
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import load_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    spec = compose_spec(recipe="graphst", sets={"train.epochs": 20, "gene.n_top_genes": 50})
    make_synthetic_adata(n_spots=150, n_genes=80, n_domains=3, seed=0).write_h5ad(tmp_path / "s.h5ad")
    section = load_section(tmp_path / "s.h5ad")
    res = fit_graph_fusion(spec, section, n_domains=3, progress=False)
    assert res.embedding.shape == (150, 50)  # the reconstruction of the 50 HVGs
    assert res.labels is not None and set(res.labels.tolist()) <= {0, 1, 2}
    assert {"recon", "contrastive", "loss"} <= set(res.history[-1])


def test_nearest_readout_averages_over_each_spots_own_k_nearest():
    from stmm_graph.contrastive_gae import nearest_mean

    # a line 0 - 1 - 2 - 3 with unequal gaps: 1's nearest is 0, 2's nearest is 3 (not each other)
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.5, 0.0]])
    graph = KnnGraph(KnnGraphParams(k=2)).build(coords)
    ctx = GraphContext(edge_index=graph.torch_edge_index(), n_nodes=4, distances=torch.from_numpy(graph.distances))
    e = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    got = nearest_mean(e, ctx, 1).squeeze(1)
    assert torch.allclose(got, torch.tensor([11 / 2, 11 / 2, 1100 / 2, 1100 / 2]))
    got2 = nearest_mean(e, ctx, 2).squeeze(1)  # 0: {1, 2}; 1: {0, 2}; 2: {3, 1}; 3: {2, 1}
    assert torch.allclose(got2, torch.tensor([111 / 3, 111 / 3, 1110 / 3, 1110 / 3]))
    m = ContrastiveGAE(ContrastiveGAEParams(latent=4, readout="nearest"))
    m.setup(3, 3, 4)
    with pytest.raises(DataError, match="graph.readout=graph"):
        m(torch.ones(4, 3), GraphContext(edge_index=graph.torch_edge_index(), n_nodes=4))


def test_nearest_readout_takes_the_builders_ranked_picks():
    from stmm_graph.contrastive_gae import nearest_edges, nearest_mean

    # an integer square: from each corner the two others at distance 1 tie; the ranked builder's picks decide
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    graph = KnnGraph(KnnGraphParams(k=1, ties="graphst")).build(coords)
    ctx = GraphContext(edge_index=graph.torch_edge_index(), n_nodes=4, distances=torch.from_numpy(graph.distances),
                       rank=torch.from_numpy(graph.rank))
    src, dst = graph.edge_index
    mask = nearest_edges(ctx, 1).numpy()
    assert np.array_equal(mask, graph.rank == 0) and np.bincount(dst[mask], minlength=4).tolist() == [1, 1, 1, 1]
    picks = np.argsort(np.linalg.norm(coords[:, None] - coords[None], axis=-1), axis=1)[:, 1]
    assert all(src[mask & (dst == i)][0] == picks[i] for i in range(4))
    e = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    expected = torch.tensor([(e[i, 0] + e[picks[i], 0]) / 2 for i in range(4)])
    assert torch.allclose(nearest_mean(e, ctx, 1).squeeze(1), expected)
    # asking for more neighbours than were ranked falls back to the distance order
    assert nearest_edges(ctx, 2).sum() > mask.sum()


def test_readout_setting_keeps_existing_spec_hashes():
    from stmm_core.spec import parse_spec

    spec = {"pipeline": "graph-fusion", "components": {
        "gene": {"name": "hvg", "params": {}}, "fusion": {"name": "concat", "params": {}},
        "builder": {"name": "knn", "params": {"k": 3}}, "graph": {"name": "contrastive-gae", "params": {}},
        "task": {"name": "gmm", "params": {}}}}
    base = parse_spec(spec)
    assert "readout" not in base.to_dict()["components"]["graph"]["params"]  # left out at its default
    assert parse_spec(spec).with_overrides({"graph.readout": "graph"}).hash() == base.hash()
    near = base.with_overrides({"graph.readout": "nearest"})
    assert near.hash() != base.hash() and near.components["graph"].params["readout_k"] == 3
