"""Co-association consensus (``domains.consensus_mode = "coassoc"``): spectral clustering of how often the seeds
put two spots together; its co-association matrix, its independence from label ids and member order, a case where
it recovers what the vote cannot, the fit path and the benchmark row."""

from __future__ import annotations

import numpy as np
import pytest


def _spec(**domains):
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    spec = parse_spec(get_recipe("stereomm-expression")["spec"])
    return spec.with_overrides({f"domains.{k}": v for k, v in domains.items()}) if domains else spec


def _merge_split_members():
    """Four domains of 100 spots; each of three members merges a different pair of domains and splits another in
    two, so every member has 4 labels and none is right, but any two spots of one domain share a label in at
    least 2 of the 3 members and spots of different domains in at most 1."""
    truth = np.repeat(np.arange(4), 100)
    half = np.tile(np.repeat([0, 1], 50), 4)  # first / second half of each domain
    m0 = np.select([truth <= 1, (truth == 2) & (half == 0), truth == 2], [0, 1, 2], 3)  # 0+1, 2 split
    m1 = np.select([truth >= 2, (truth == 0) & (half == 0), truth == 0], [0, 1, 2], 3)  # 2+3, 0 split
    m2 = np.select([(truth == 1) | (truth == 2), (truth == 3) & (half == 0), truth == 3], [0, 1, 2], 3)  # 1+2, 3 split
    return truth, [m0, m1, m2]


def test_onehot_stack_gives_the_coassociation():
    from stmm_core.pipeline.consensus_coassoc import onehot_stack

    members = [np.array([0, 0, 1, 1]), np.array(["a", "b", "b", "b"]), np.array([5, 5, 5, 7])]
    h = onehot_stack(members)
    c = h @ h.T
    expect = np.mean([(m[:, None] == m[None, :]) for m in members], axis=0)
    np.testing.assert_allclose(c, expect, atol=1e-12)
    with pytest.raises(ValueError):
        onehot_stack([])
    with pytest.raises(ValueError):
        onehot_stack([members[0], members[0][:3]])


def test_coassoc_recovers_the_domains_where_the_vote_cannot():
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.consensus import consensus_labels
    from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

    truth, members = _merge_split_members()
    c = consensus_coassoc(members, 4, seed=0)
    assert ari(truth, c.labels) == pytest.approx(1.0)
    assert ari(truth, consensus_labels(members).labels) < 0.9  # the vote follows one member's merge or split
    assert all(ari(truth, m) < 0.9 for m in members)
    assert c.info["mode"] == "coassoc" and c.labels.dtype == np.int64 and set(np.unique(c.labels)) == set(range(4))
    np.testing.assert_allclose(c.confidence, (c.aligned == c.labels[None]).mean(axis=0), atol=1e-6)
    assert c.pairwise_ari.shape == (3, 3) and len(c.member_ari) == 3


def test_coassoc_ignores_label_ids_and_member_order():
    from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(5), 60)
    members = [np.where(rng.random(truth.size) < 0.15, rng.integers(0, 5, truth.size), truth) for _ in range(5)]
    base = consensus_coassoc(members, 5, seed=3).labels
    renamed = [rng.permutation(5)[m] for m in members[::-1]]  # other ids, other order
    assert np.array_equal(consensus_coassoc(renamed, 5, seed=3).labels, base)  # ids by size: the same labelling
    assert np.array_equal(consensus_coassoc(members, 5, seed=3).labels, base)  # deterministic


def test_coassoc_does_not_split_a_group_the_members_agree_on():
    import warnings

    from stmm_core.pipeline.consensus_coassoc import coassociation_coordinates, consensus_coassoc

    m = np.repeat(np.arange(3), 20)
    assert coassociation_coordinates([m, m], 4).shape == (60, 3)  # no null-space direction
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = consensus_coassoc([m, m], 4)  # asked for 4, the members hold 3 groups: 3 domains, no warning
    from sklearn.metrics import adjusted_rand_score as ari

    assert len(np.unique(c.labels)) == 3 and ari(m, c.labels) == 1.0 and c.confidence.min() == 1.0


def test_coassoc_refines_spatially_when_asked():
    from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

    truth = np.repeat(np.arange(3), 50)
    coords = np.stack([np.arange(truth.size, dtype=float), np.zeros(truth.size)], axis=1)
    members = [truth.copy() for _ in range(3)]
    for m in members:
        m[[25, 75, 125]] = (truth[[25, 75, 125]] + 1) % 3  # the same isolated spot wrong in every member
    raw = consensus_coassoc(members, 3, seed=0)
    refined = consensus_coassoc(members, 3, seed=0, coords=coords, refine_neighbors=5)
    assert (raw.labels[[24, 25, 26]] != raw.labels[24]).any()  # the lone spot keeps its own domain
    assert (refined.labels[[24, 25, 26]] == refined.labels[24]).all()  # refinement gives it its neighbours'


def test_coassoc_mode_setting_and_benchmark_row():
    from stmm_core.benchmark.pipelines import select

    assert _spec().hash().startswith("cb2aa28af47e")  # the recipe since the sixth consensus round (CONSENSUS.md)
    # the spec before it (seurat HVGs, the hash in benchmarks/RESULTS.md) still hashes as recorded
    assert _spec().with_overrides({"gene.flavor": "seurat"}).hash().startswith("770f3e081d35")
    co = _spec(consensus=5, consensus_mode="coassoc")
    assert co.hash() != _spec(consensus=5).hash() and co.to_dict()["domains"]["consensus_mode"] == "coassoc"
    rows = select(["stereomm-expression+consensus5-coassoc"], [])
    assert (rows[0].spec.domains.consensus, rows[0].spec.domains.consensus_mode) == (5, "coassoc")
    assert rows[0].overrides["domains.consensus_mode"] == "coassoc"


def test_fit_consensus_in_coassoc_mode_clusters_the_members_coassociation(synthetic_h5ad):
    from stmm_core.pipeline.consensus_coassoc import consensus_coassoc
    from stmm_core.pipeline.consensus_fit import fit_consensus
    from stmm_core.pipeline.run import load_section

    section = load_section(synthetic_h5ad)
    spec = _spec(consensus=2, consensus_mode="coassoc").with_overrides(
        {"train.epochs": 30, "gene.n_top_genes": 100, "train.seed": 1})
    res = fit_consensus(spec, section, n_domains=4, processes=1, progress=False)
    block = res.info["consensus"]
    assert block["mode"] == "coassoc" and block["seeds"] == [2, 3]
    assert res.member_labels.shape == (2, section.n_spots) and res.confidence.shape == (section.n_spots,)
    expect = consensus_coassoc(list(res.member_labels), 4, 1, section.coords, spec.domains.refine_neighbors)
    assert np.array_equal(expect.labels, res.labels)
    assert abs(float(res.confidence.mean()) - block["mean_confidence"]) < 1e-6
