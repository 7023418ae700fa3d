"""Partition training is a declared capability: every bundled graph model, trained over partitions, gives the
full-batch loss and gradient; a model that declares nothing is refused with one clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stmm_core.errors import SpecError
from stmm_core.interfaces import GraphModel, GraphModelOutput, PartitionSupport
from stmm_core.pipeline.minibatch import partition_plan, train_partitioned
from stmm_core.pipeline.target import reconstruction_target
from stmm_core.plugins import get_catalogue
from stmm_core.testing.partition import compare_partition_step

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TOL = 1e-5  # relative, loss and gradient (measured: ~1e-7, float summation order)

#: small parameters of every bundled graph model, and the variants that change what partitions must get right
MODEL_CASES: dict[str, list[dict]] = {
    "vgae": [{"hidden": [16], "latent": 4, "kl_weight": 0.1},
             {"hidden": [16, 8], "latent": 4, "conv": "sage"},
             {"hidden": [8], "latent": 4, "conv": "gat"},
             {"hidden": [16], "latent": 4, "decoder_covariates": ["log_library"]}],  # per-spot decoder input
    "contrastive-gae": [{"latent": 8},
                        {"latent": 8, "adjacency": "graphst", "bias": False},  # GraphST's own matrix
                        {"latent": 8, "corruption": "fixed", "embedding": "latent"},
                        {"latent": 8, "adjacency": "graphst", "bias": False, "readout": "nearest"}],  # GraphST's read-out
    "identity": [{}],
    "propagate": [{"hops": 2}],
}


def _grid(side: int = 20, seed: int = 0):
    from stmm_graph.builders import RadiusGraph
    from stmm_graph.params import RadiusGraphParams

    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(float) * 10.0 + rng.uniform(0, 1, (side * side, 2))
    graph = RadiusGraph(RadiusGraphParams(radius=15.0)).build(coords)  # 8-neighbour grid
    n = len(coords)
    img = torch.from_numpy(rng.normal(size=(n, 6)).astype(np.float32))
    gene = torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32))
    return coords, graph.edge_index, img, gene


def _build(kind: str, name: str, params: dict):
    return get_catalogue().get(kind, name).build(params)


def _setup(fusion_name: str, fusion_params: dict, model_name: str, model_params: dict, img, gene):
    torch.manual_seed(0)
    fusion = _build("fusion", fusion_name, fusion_params)
    fusion.setup(img.shape[1], gene.shape[1])
    model = _build("graph_model", model_name, model_params)
    target = reconstruction_target("inputs", fusion, img, gene)
    model.setup(fusion.out_dim, target.shape[1], gene.shape[0])
    return fusion, model, target


def test_every_bundled_graph_model_has_a_case_and_a_declaration():
    names = {info.name for info in get_catalogue().search(kind="graph_model") if info.package == "stmm"}
    assert {"vgae", "contrastive-gae", "identity"} <= names
    assert names <= set(MODEL_CASES), f"add partition test cases for {sorted(names - set(MODEL_CASES))}"
    for name in names:
        cls = get_catalogue().get("graph_model", name).load()
        assert cls.partition_support(get_catalogue().get("graph_model", name).validate_params({})) is not None


@pytest.mark.parametrize("fusion_name,fusion_params", [("concat", {}), ("attention", {"dim": 8, "heads": 2})])
@pytest.mark.parametrize("model_name,case", [(m, i) for m, cases in MODEL_CASES.items() for i in range(len(cases))])
def test_partition_step_equals_full_batch(fusion_name, fusion_params, model_name, case):
    """One training step (noise, negatives and all): loss and gradient equal to 1e-5; one hop less is not."""
    coords, ei, img, gene = _grid()
    fusion, model, target = _setup(fusion_name, fusion_params, model_name, MODEL_CASES[model_name][case], img, gene)
    diff = compare_partition_step(fusion, model, img, gene, target, coords, ei, partition_size=100)
    assert diff["partitions"] >= 4
    assert diff["loss_rel"] < TOL and diff["grad_rel"] < TOL, diff
    if case == 0 and model_name not in ("identity", "propagate"):  # (nothing learnt: loss and gradient are 0)  # the declared halo is needed: one hop less is wrong
        short = compare_partition_step(fusion, model, img, gene, target, coords, ei, partition_size=100,
                                       hops=diff["hops"] - 1)
        assert short["grad_rel"] > max(TOL, 10 * diff["grad_rel"]), (short, diff)


def test_contrastive_negatives_come_from_the_whole_section():
    """The permutation is drawn over all N spots (as in full batch), not within each partition."""
    coords, ei, img, gene = _grid()
    fusion, model, target = _setup("concat", {}, "contrastive-gae", {"latent": 8}, img, gene)
    assert partition_plan(fusion, model).negatives
    seen = []
    real = model.negative_permutation

    def spy(n, device):
        seen.append(n)
        return real(n, device)

    model.negative_permutation = spy
    compare_partition_step(fusion, model, img, gene, target, coords, ei, partition_size=100)
    assert seen == [len(coords), len(coords)]  # full batch once, partition training once per step, both over N


class Undeclared(torch.nn.Module, GraphModel):
    """A third-party-style graph model that says nothing about partitions."""

    def __init__(self, params=None):
        torch.nn.Module.__init__(self)
        GraphModel.__init__(self, params)
        self.lin = torch.nn.Linear(1, 1)
        self.latent_dim = 1

    def setup(self, d_in, d_target, n_nodes):
        self.lin = torch.nn.Linear(d_in, d_target)

    def forward(self, x, ctx):
        h = self.lin(x)
        return GraphModelOutput(z=h, mu=h, logvar=torch.zeros_like(h), recon=h)

    def loss(self, out, target):
        return {"loss": torch.nn.functional.mse_loss(out.recon, target)}


def test_a_model_without_a_declaration_is_refused():
    coords, ei, img, gene = _grid(side=6)
    fusion = _build("fusion", "concat", {})
    fusion.setup(6, 5)
    model = Undeclared()
    model.setup(11, 11, len(coords))
    with pytest.raises(SpecError) as exc:
        partition_plan(fusion, model, {"graph": "my-gnn"})
    msg = str(exc.value)
    assert "graph model 'my-gnn'" in msg and "train.batch=full" in msg and "partition_support" in msg
    with pytest.raises(SpecError, match="does not declare"):
        train_partitioned(fusion, model, img, gene, torch.zeros(len(coords), 11), [], None, [], epochs=1,
                          grad_clip=None, accumulate=True, seed=0, lr=0.0)


def test_declarations_refuse_global_attention_and_flag_dropout():
    fusion = _build("fusion", "attention", {"dim": 8, "heads": 2, "scope": "global"})
    model = _build("graph_model", "vgae", {"hidden": [8], "latent": 4})
    with pytest.raises(SpecError, match="cannot be trained over spatial partitions.*fusion.scope=neighbourhood"):
        partition_plan(fusion, model)
    plan = partition_plan(_build("fusion", "concat", {}), _build("graph_model", "vgae", {"dropout": 0.2}))
    assert not plan.exact and "dropout" in plan.reasons[0] and plan.describe()["exact"] is False
    assert _build("graph_model", "vgae", {"hidden": [8, 8, 8]}).partition_support(
        _build("graph_model", "vgae", {"hidden": [8, 8, 8]}).params) == PartitionSupport(hops=8, noise=True)


def test_fit_refuses_an_undeclared_model_before_training(tmp_path, monkeypatch):
    """Through the pipeline: one SpecError naming the spec's model and the flag that turns partitions off."""
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.data.readers import read_section
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_graph.vgae import VGAE

    path = tmp_path / "s.h5ad"
    make_synthetic_adata(n_spots=120, n_genes=40, n_domains=3, seed=0, image=False).write_h5ad(path)
    section = read_section(path)
    monkeypatch.setattr(VGAE, "partition_support", classmethod(lambda cls, params: None))
    spec = compose_spec("stereomm-expression", None, {"gene.n_top_genes": 30, "gene.pca": 8, "train.epochs": 2,
                                                     "train.batch": "partition", "train.partition_size": 40})
    with pytest.raises(SpecError, match=r"graph model 'vgae'.*--set train.batch=full"):
        fit_graph_fusion(spec, section, n_domains=3, progress=False)


@pytest.mark.parametrize("recipe,sets", [
    ("graphst", {"gene.n_top_genes": 40}),  # contrastive-gae, GraphST's propagation matrix, global negatives
    ("stereomm-expression", {"gene.n_top_genes": 40, "gene.pca": 8, "graph.hidden": [16], "graph.latent": 4}),
    ("stereomm-expression", {"gene.n_top_genes": 40, "gene.pca": 8, "graph.hidden": [16], "graph.latent": 4,
                             "graph.decoder_covariates": ["log_library"]}),  # each partition reads its rows
])
def test_fits_over_partitions_follow_full_batch_training(tmp_path, recipe, sets):
    """Several Adam steps through the pipeline: the partition fit's embedding equals the full-batch fit's (float
    summation order apart), and metrics record the declared halo and exactness."""
    from stmm_core.data.readers import read_section
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.testing.synthetic import make_synthetic_adata

    path = tmp_path / "s.h5ad"
    make_synthetic_adata(n_spots=160, n_genes=60, n_domains=3, seed=0, image=False).write_h5ad(path)
    section = read_section(path)
    emb = {}
    for batch in ("full", "partition"):
        spec = compose_spec_for(recipe, {**sets, "train.epochs": 8, "train.batch": batch, "train.partition_size": 40})
        res = fit_graph_fusion(spec, section, n_domains=None, progress=False)
        emb[batch] = res.embedding
    info = res.info["batch"]
    assert info["mode"] == "partition" and info["partitions"] >= 3 and info["exact"] is True
    assert info["hops"] == info["fusion_hops"] + info["model_hops"] == (2 if recipe == "graphst" else 5)
    scale = np.abs(emb["full"]).max()
    assert np.abs(emb["partition"] - emb["full"]).max() < 1e-5 * scale  # measured ~1e-7; local negatives: 6e-5


def compose_spec_for(recipe, sets):
    from stmm_core.cli.compose_cmd import compose_spec

    return compose_spec(recipe, None, sets)



def test_partitions_carry_the_ranked_picks_of_a_tied_lattice(tmp_path):
    """kNN ties='graphst' on an integer lattice full of ties: every partition's edges keep the graph's ranks, so a
    core spot's read-out takes its own picks there too (the distance order would take others on this lattice)."""
    import torch

    from stmm_core.pipeline.partitions import make_partitions
    from stmm_graph.builders import KnnGraph
    from stmm_graph.contrastive_gae import nearest_edges
    from stmm_graph.params import KnnGraphParams

    ij = np.array([(i, j) for j in range(12) for i in range(12)])
    xy = (np.c_[2 * ij[:, 0] + ij[:, 1] % 2, 2 * ij[:, 1]] * 137.0)[np.random.default_rng(0).permutation(144)]
    g = KnnGraph(KnnGraphParams(k=3, ties="graphst")).build(xy)
    picks = {(int(s), int(t)) for s, t, r in zip(*g.edge_index, g.rank) if r >= 0}
    parts = make_partitions(xy, g.edge_index, len(xy), 40, 2, rank=g.rank)
    for pt in parts:
        ei = pt.ctx.edge_index.numpy()
        mask = nearest_edges(pt.ctx, 3).numpy()
        core = np.isin(ei[1], np.arange(pt.n_core))
        got = {(int(pt.nodes[s]), int(pt.nodes[t])) for s, t in ei[:, mask & core].T}
        want = {(s, t) for s, t in picks if t in set(pt.nodes[: pt.n_core].tolist())}
        assert got == want
    # guard: without the ranks the distance order picks differently on this lattice
    ctx = type(parts[0].ctx)(edge_index=torch.from_numpy(g.edge_index), n_nodes=len(xy),
                             distances=torch.from_numpy(g.distances))
    assert (nearest_edges(ctx, 3).numpy() != (g.rank >= 0)).any()
    no_rank = make_partitions(xy, g.edge_index, len(xy), 40, 2)
    assert all(pt.ctx.rank is None for pt in no_rank)
