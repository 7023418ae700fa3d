"""Graph plug-in: builders, sparse GCN / GAT / SAGE layers, VGAE and DEC refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import adjusted_rand_score

from stmm_core.errors import DataError, SpecError
from stmm_core.interfaces import GraphBuilder, GraphContext, GraphModel, GraphModelOutput
from stmm_graph.builders import KnnGraph, RadiusGraph
from stmm_graph.layers import SparseGCNConv, build_adj_norm, graph_context, make_conv
from stmm_graph.params import KnnGraphParams, RadiusGraphParams, VGAEParams
from stmm_graph.vgae import VGAE, dec_target, student_t_q
from stmm_tasks.clustering import GMMClustering
from stmm_tasks.params import GMMParams


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def hex_lattice(rows: int, cols: int, spacing: float = 100.0) -> np.ndarray:
    """Visium-like hexagonal lattice (every spot has 6 neighbours at ``spacing``)."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    x = c * spacing + (r % 2) * spacing / 2
    y = r * spacing * np.sqrt(3) / 2
    return np.stack([x.ravel(), y.ravel()], 1) + 1000.0


def square_grid(side: int, spacing: float = 100.0) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(float) * spacing


def check_graph_invariants(g, n: int) -> None:
    ei = g.edge_index
    assert ei.dtype == np.int64 and ei.shape[0] == 2 and ei.flags["C_CONTIGUOUS"]
    assert g.distances.dtype == np.float32 and g.distances.shape == (ei.shape[1],)
    assert g.n_nodes == n and ei.min() >= 0 and ei.max() < n
    assert not np.any(ei[0] == ei[1]), "self loops"
    keys = ei[0] * n + ei[1]
    assert np.all(np.diff(keys) > 0), "not sorted by (src, dst) or duplicated"
    assert set(keys.tolist()) == set((ei[1] * n + ei[0]).tolist()), "not symmetric"


# --------------------------------------------------------------------------- builders
def test_params():
    assert RadiusGraphParams().radius is None and RadiusGraphParams().radius_factor == 1.5
    assert KnnGraphParams().k == 6
    with pytest.raises(ValidationError):
        RadiusGraphParams(radius=-1)
    with pytest.raises(ValidationError):
        KnnGraphParams(k=0)
    with pytest.raises(ValidationError):
        VGAEParams(hidden=[])
    with pytest.raises(ValidationError):
        VGAEParams(decoder="inner_product")
    with pytest.raises(ValidationError):
        VGAEParams(extra=1)


def test_hex_lattice_default_radius_gives_six_neighbours():
    coords = hex_lattice(12, 14)
    builder = RadiusGraph(RadiusGraphParams())
    assert isinstance(builder, GraphBuilder)
    g = builder.build(coords, spot_diameter=55.0)
    check_graph_invariants(g, len(coords))
    deg = np.bincount(g.edge_index[0], minlength=len(coords))
    r, c = np.meshgrid(np.arange(12), np.arange(14), indexing="ij")
    interior = ((r > 0) & (r < 11) & (c > 0) & (c < 13)).ravel()
    assert np.all(deg[interior] == 6)
    assert np.allclose(g.distances, 100.0, atol=1e-3)
    assert g.meta["radius"] == pytest.approx(150.0, rel=1e-6)
    assert g.meta["median_nn_distance"] == pytest.approx(100.0, rel=1e-6)
    assert g.meta["mean_degree"] == pytest.approx(g.mean_degree())
    assert g.meta["spot_diameter"] == 55.0


def test_square_grid_radius_and_explicit_radius():
    coords = square_grid(10)
    g = RadiusGraph(RadiusGraphParams()).build(coords)  # 1.5 × 100 = 150 includes the diagonals (141)
    assert np.bincount(g.edge_index[0]).max() == 8
    check_graph_invariants(g, 100)
    g4 = RadiusGraph(RadiusGraphParams(radius=100.0)).build(coords)  # StereoMM's r = bin size; == r is kept
    assert np.bincount(g4.edge_index[0]).max() == 4 and g4.n_edges == 2 * (2 * 10 * 9)
    g4b = RadiusGraph(RadiusGraphParams(radius_factor=1.2)).build(coords)
    np.testing.assert_array_equal(g4.edge_index, g4b.edge_index)


def test_radius_too_small_is_a_clear_error():
    with pytest.raises(SpecError, match="median nearest-neighbour distance is 100"):
        RadiusGraph(RadiusGraphParams(radius=10.0)).build(square_grid(5))


@pytest.mark.parametrize("bad", [np.zeros((5, 4)), np.array([[0.0, 1.0]]), np.array([[0.0, np.nan], [1.0, 1.0]])])
def test_bad_coordinates(bad):
    with pytest.raises(DataError):
        RadiusGraph(RadiusGraphParams()).build(bad)


def test_knn_graph():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1000, size=(300, 2))
    g = KnnGraph(KnnGraphParams(k=5)).build(coords)
    check_graph_invariants(g, 300)
    deg = np.bincount(g.edge_index[0], minlength=300)
    assert deg.min() >= 5 and g.meta["k"] == 5
    # each spot's 5 nearest neighbours are among its graph neighbours
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, 1)[:, :5]
    nbrs = {i: set() for i in range(300)}
    for s, t in g.edge_index.T:
        nbrs[s].add(t)
    assert all(set(nearest[i]) <= nbrs[i] for i in range(300))
    with pytest.raises(SpecError):
        KnnGraph(KnnGraphParams(k=300)).build(coords)


def test_duplicate_coordinates_have_no_self_loops():
    coords = np.repeat(square_grid(4), 2, axis=0)  # every spot twice
    for builder in (RadiusGraph(RadiusGraphParams()), KnnGraph(KnnGraphParams(k=3))):
        g = builder.build(coords)
        check_graph_invariants(g, 32)
        assert np.any(g.distances == 0)  # the twin is a neighbour at distance 0
    assert RadiusGraph(RadiusGraphParams()).build(coords).meta["median_nn_distance"] == pytest.approx(100.0)


def test_builders_are_deterministic():
    coords = np.random.default_rng(1).uniform(0, 500, size=(500, 2))
    for builder in (RadiusGraph(RadiusGraphParams()), KnnGraph(KnnGraphParams())):
        a, b = builder.build(coords), builder.build(coords.copy())
        np.testing.assert_array_equal(a.edge_index, b.edge_index)


# --------------------------------------------------------------------------- layers
def small_graph(n: int = 40, seed: int = 0):
    coords = np.random.default_rng(seed).uniform(0, 600, size=(n, 2))
    return KnnGraph(KnnGraphParams(k=4)).build(coords)


def dense_norm_adj(edge_index: np.ndarray, n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[edge_index[1], edge_index[0]] = 1.0
    a += torch.eye(n)
    dinv = a.sum(1).pow(-0.5)
    return dinv[:, None] * a * dinv[None, :]


def test_adj_norm_matches_dense_reference():
    g = small_graph()
    ei = g.torch_edge_index()
    adj = build_adj_norm(ei, g.n_nodes)
    assert adj.layout == torch.sparse_csr and adj.dtype == torch.float32 and adj.shape == (40, 40)
    torch.testing.assert_close(adj.to_dense(), dense_norm_adj(g.edge_index, 40))
    # duplicates and self loops in the input are ignored
    noisy = torch.cat([ei, ei[:, :10], torch.arange(5).repeat(2, 1)], 1)
    torch.testing.assert_close(build_adj_norm(noisy, 40).to_dense(), adj.to_dense())


def test_graphst_adjacency_keeps_weight_one_for_the_spot_itself():
    """GraphST's preprocess_adj: D^-1/2 A D^-1/2 (degrees without self loops) + I; an isolated node keeps 1."""
    g = small_graph()
    n = g.n_nodes + 1  # one extra node without neighbours
    a = torch.zeros(n, n)
    a[g.edge_index[1], g.edge_index[0]] = 1.0
    deg = a.sum(1)
    dinv = torch.where(deg > 0, deg.clamp_min(1).pow(-0.5), torch.zeros_like(deg))
    expected = dinv[:, None] * a * dinv[None, :] + torch.eye(n)
    adj = build_adj_norm(g.torch_edge_index(), n, self_loops="graphst")
    torch.testing.assert_close(adj.to_dense(), expected)
    assert adj.to_dense()[n - 1, n - 1] == 1.0 and adj.to_dense()[n - 1].sum() == 1.0
    assert not torch.allclose(adj.to_dense(), build_adj_norm(g.torch_edge_index(), n).to_dense())


def test_sparse_gcn_matches_dense_and_pyg():
    from torch_geometric.nn import GCNConv

    g = small_graph()
    ctx = graph_context(g)
    torch.manual_seed(0)
    x = torch.randn(40, 7, requires_grad=True)
    for d_out in (3, 11):  # both multiplication orders
        conv = SparseGCNConv(7, d_out)
        with torch.no_grad():
            conv.bias.normal_()
        out = conv(x, ctx)
        ref = dense_norm_adj(g.edge_index, 40) @ x @ conv.weight + conv.bias
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        pyg = GCNConv(7, d_out)
        with torch.no_grad():
            pyg.lin.weight.copy_(conv.weight.T)
            pyg.bias.copy_(conv.bias)
        torch.testing.assert_close(out, pyg(x, ctx.edge_index), rtol=1e-5, atol=1e-5)
        out.pow(2).sum().backward()
        assert conv.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_gcn_builds_adjacency_lazily():
    g = small_graph()
    ctx = GraphContext(edge_index=g.torch_edge_index(), n_nodes=40)
    SparseGCNConv(4, 2)(torch.randn(40, 4), ctx)
    assert ctx.adj_norm is not None


@pytest.mark.parametrize("kind", ["gcn", "gat", "sage"])
def test_make_conv(kind):
    ctx = graph_context(small_graph())
    conv = make_conv(kind, 6, 5)
    x = torch.randn(40, 6)
    out = conv(x, ctx)
    assert out.shape == (40, 5) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in conv.parameters())
    with pytest.raises(ValueError):
        make_conv("gin", 6, 5)


# --------------------------------------------------------------------------- VGAE
def make_vgae(conv: str = "gcn", d_in: int = 12, d_target: int = 9, n: int = 40, **kw) -> VGAE:
    model = VGAE(VGAEParams(conv=conv, hidden=[16], latent=4, **kw))
    model.setup(d_in, d_target, n)
    return model


@pytest.mark.parametrize("conv", ["gcn", "gat", "sage"])
def test_vgae_forward_and_loss(conv):
    torch.manual_seed(0)
    ctx = graph_context(small_graph())
    model = make_vgae(conv)
    assert isinstance(model, GraphModel) and model.latent_dim == 4
    x, target = torch.randn(40, 12), torch.randn(40, 9)
    out = model(x, ctx)
    assert isinstance(out, GraphModelOutput)
    assert out.z.shape == out.mu.shape == out.logvar.shape == (40, 4) and out.recon.shape == (40, 9)
    terms = model.loss(out, target)
    assert set(terms) == {"recon", "kl", "loss"}
    torch.testing.assert_close(terms["recon"], torch.nn.functional.mse_loss(out.recon, target))
    torch.testing.assert_close(terms["loss"], terms["recon"] + 1e-3 * terms["kl"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_vgae_eval_is_deterministic_and_training_is_stochastic():
    torch.manual_seed(0)
    ctx = graph_context(small_graph())
    model = make_vgae()
    x = torch.randn(40, 12)
    model.train()
    e1, e2 = model.embed(x, ctx), model.embed(x, ctx)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert model.training, "embed() must restore the training flag"
    t1, t2 = model(x, ctx), model(x, ctx)
    assert not torch.allclose(t1.z, t2.z)  # reparameterised sample
    torch.testing.assert_close(t1.mu, t2.mu)
    torch.testing.assert_close(t1.mu, e1)
    model.eval()
    out = model(x, ctx)
    torch.testing.assert_close(out.z, out.mu, rtol=0, atol=0)
    torch.testing.assert_close(out.mu, e1)


def test_kl_consistent_with_logvar():
    mu, logvar = torch.zeros(10, 4), torch.zeros(10, 4)
    assert VGAE.kl_divergence(mu, logvar).item() == 0.0
    # KL(N(m, s²) || N(0, 1)) = ½ (s² + m² − 1 − log s²), summed over dims, averaged over nodes
    m, lv = torch.full((3, 2), 0.5), torch.full((3, 2), np.log(2.0), dtype=torch.float32)
    expected = 2 * 0.5 * (2.0 + 0.25 - 1.0 - np.log(2.0))
    assert VGAE.kl_divergence(m, lv).item() == pytest.approx(expected, rel=1e-5)


def test_logvar_is_clamped_and_decoder_is_linear():
    torch.manual_seed(0)
    ctx = graph_context(small_graph())
    model = make_vgae()
    out = model(torch.randn(40, 12) * 1e4, ctx)
    assert out.logvar.min() >= -10 and out.logvar.max() <= 10
    assert (out.recon < 0).any() and (out.recon > 0).any()  # no ReLU on the output


def test_vgae_input_errors():
    ctx = graph_context(small_graph())
    model = make_vgae()
    with pytest.raises(DataError):
        model(torch.randn(40, 5), ctx)
    with pytest.raises(DataError):
        model(torch.randn(30, 12), ctx)
    with pytest.raises(DataError):
        model.loss(model(torch.randn(40, 12), ctx), torch.randn(40, 3))


def test_student_t_and_target():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    q = student_t_q(z, c, alpha=1.0)
    # alpha = 1: q ∝ 1 / (1 + d²)
    expected = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    torch.testing.assert_close(q, expected / expected.sum(1, keepdim=True))
    p = dec_target(q)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert (p.max(1).values > q.max(1).values).all()  # sharper than q


def test_dec_refinement_enters_the_loss():
    torch.manual_seed(0)
    ctx = graph_context(small_graph())
    model = make_vgae(dec=True, dec_weight=0.5)
    x, target = torch.randn(40, 12), torch.randn(40, 9)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    assert not model.refinement_active
    centres = model.start_refinement(model.embed(x, ctx), n_clusters=3, seed=0)
    assert model.refinement_active and centres.shape == (3, 4) and centres.requires_grad
    assert any(p is centres for p in model.parameters())
    opt.add_param_group({"params": [centres]})
    before = centres.detach().clone()
    terms = model.loss(model(x, ctx), target)
    assert terms["dec"].item() > 0
    torch.testing.assert_close(terms["loss"], terms["recon"] + 1e-3 * terms["kl"] + 0.5 * terms["dec"])
    opt.zero_grad()
    terms["loss"].backward()
    assert centres.grad is not None and centres.grad.abs().sum() > 0
    assert model.mu_head.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, centres.detach())
    changed = model.update_target(model.embed(x, ctx))
    assert 0.0 <= changed <= 1.0
    # a checkpoint taken during DEC loads strictly into a fresh model
    fresh = make_vgae(dec=True)
    fresh.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(fresh.dec_centres, centres)
    with pytest.raises(DataError):
        model.start_refinement(model.embed(x, ctx), n_clusters=41)
    model.stop_refinement()
    assert "dec" not in model.loss(model(x, ctx), target)


def test_dec_kmeans_init_is_seeded():
    torch.manual_seed(0)
    ctx = graph_context(small_graph())
    model = make_vgae()
    mu = model.embed(torch.randn(40, 12), ctx)
    a = model.start_refinement(mu, 3, seed=5).detach().clone()
    b = model.start_refinement(mu, 3, seed=5).detach().clone()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------- end to end
def stripes(noise: float = 3.0, seed: int = 0):
    """30×30 grid, 3 vertical stripes (domains), 50-d features = domain mean + Gaussian noise."""
    rng = np.random.default_rng(seed)
    coords = square_grid(30)
    truth = (coords[:, 0] // 1000).astype(int)
    means = rng.normal(size=(3, 50)).astype(np.float32)
    x = means[truth] + noise * rng.normal(size=(900, 50)).astype(np.float32)
    return coords, truth, x


def test_vgae_recovers_spatial_domains():
    coords, truth, x = stripes()
    gmm = GMMClustering(GMMParams())
    raw_ari = adjusted_rand_score(truth, gmm.run(x, 3, seed=0))
    torch.manual_seed(0)
    ctx = graph_context(RadiusGraph(RadiusGraphParams()).build(coords))
    model = VGAE(VGAEParams(hidden=[64], latent=8, kl_weight=0.1))
    model.setup(50, 50, 900)
    feats = torch.from_numpy(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(model(feats, ctx), feats)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.9 * np.mean(losses[:5])
    emb = model.embed(feats, ctx).numpy()
    ari = adjusted_rand_score(truth, gmm.run(emb, 3, seed=0))
    assert ari > 0.8, (ari, raw_ari)
    assert ari > raw_ari  # the spatial graph helps on noisy features


def test_knn_graphst_ties_rank_each_spots_own_picks():
    """ties='graphst': numpy's argsort order of each spot's exact distance row, picks ranked 0..k-1 (no package)."""
    coords = np.delete(square_grid(7), [3, 10, 24, 30], axis=0)  # integer grid with holes: ties everywhere
    n = len(coords)
    g = KnnGraph(KnnGraphParams(k=3, ties="graphst")).build(coords)
    check_graph_invariants(g, n)
    assert g.rank.shape == g.distances.shape and g.meta["ties"] == "graphst"
    d = np.sqrt(((coords[:, None] - coords[None]) ** 2).sum(-1))
    picks = np.argsort(d, axis=1)[:, 1:4]  # GraphST's construct_interaction (self sorts first: no duplicates)
    src, dst = g.edge_index
    for i in range(n):
        own = g.rank[dst == i] >= 0
        assert list(src[dst == i][own][np.argsort(g.rank[dst == i][own])]) == list(picks[i])
    assert np.array_equal(np.sort(np.bincount(dst[g.rank >= 0], minlength=n)), np.full(n, 3))
    # the default builder does not rank, and the new setting leaves the serialised params (the hash) alone
    assert KnnGraph(KnnGraphParams(k=3)).build(coords).rank is None
    assert "ties" not in KnnGraphParams(k=3).model_dump()
    assert KnnGraphParams(k=3, ties="graphst").model_dump()["ties"] == "graphst"
    twins = KnnGraph(KnnGraphParams(k=3, ties="graphst")).build(np.repeat(square_grid(4), 2, axis=0))
    check_graph_invariants(twins, 32)  # duplicate coordinates: still no self loops
