"""Embedding-level consensus (``domains.consensus_mode = "embedding"``): the members' embeddings side by side,
clustered once by the spec's task; the members' agreement with the result; the spec setting's hash."""

from __future__ import annotations

import numpy as np
import pytest


def _spec(**domains):
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    spec = parse_spec(get_recipe("stereomm-expression")["spec"])
    return spec.with_overrides({f"domains.{k}": v for k, v in domains.items()}) if domains else spec


def _members(n: int = 3, seed: int = 0):
    """Five domains in a line of spots; each member embeds them in its own random basis with its own scale, and
    each member alone confuses a different pair of domains (their means coincide in that member)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(5), 120)
    coords = np.stack([np.arange(truth.size, dtype=float), np.zeros(truth.size)], axis=1)
    centres = rng.normal(0, 3, size=(5, 8))
    embs = []
    for i in range(n):
        c = centres.copy()
        c[(i + 1) % 5] = c[i % 5]  # this member cannot tell domain i from domain i+1
        x = c[truth] + rng.normal(0, 1.0, size=(truth.size, 8))
        q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
        embs.append((x @ q) * (i + 1) * 10.0 + 5.0)  # own basis, scale and offset
    return truth, coords, embs


def test_joint_embedding_weighs_every_member_the_same():
    from stmm_core.pipeline.consensus_embed import joint_embedding

    _, _, embs = _members()
    j = joint_embedding(embs)
    assert j.shape == (embs[0].shape[0], 8 * len(embs)) and j.dtype == np.float32
    for i in range(len(embs)):
        block = j[:, 8 * i: 8 * (i + 1)].astype(np.float64)
        np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-5)
        assert (block ** 2).sum() / len(block) == pytest.approx(1.0, rel=1e-4)  # unit total variance
    with pytest.raises(ValueError):
        joint_embedding([embs[0], embs[1][:10]])
    with pytest.raises(ValueError):
        joint_embedding([])


def test_agreement_reports_members_against_a_given_labelling():
    from stmm_core.pipeline.consensus import agreement

    lab = np.array([0, 0, 1, 1, 2, 2])
    c = agreement(lab, [(lab + 1) % 3, lab, np.array([0, 0, 1, 1, 1, 2])])
    assert set(np.unique(c.labels)) == {0, 1, 2}
    np.testing.assert_allclose(c.confidence, [1, 1, 1, 1, 2 / 3, 1], atol=1e-6)
    assert c.member_ari[0] == pytest.approx(1.0) and c.member_ari[2] < 1.0
    assert c.pairwise_ari[0, 1] == pytest.approx(1.0) and c.seed_ari_min < 1.0
    with pytest.raises(ValueError):
        agreement(lab, [lab[:3]])


def test_clustering_the_joint_embedding_beats_every_member_and_the_vote():
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.consensus import consensus_labels
    from stmm_core.pipeline.consensus_embed import cluster_embedding, consensus_embedding

    truth, coords, embs = _members()
    spec = _spec(consensus=3, consensus_mode="embedding").with_overrides({"domains.refine_neighbors": 0})
    single = [cluster_embedding(spec, e, 5, 0, coords) for e in embs]
    vote = consensus_labels(single).labels
    c = consensus_embedding(spec, embs, single, 5, 0, coords)
    assert ari(truth, c.labels) > 0.95  # every pair of domains is told apart by some member
    assert ari(truth, c.labels) > max(ari(truth, s) for s in single) + 0.1
    assert ari(truth, c.labels) >= ari(truth, vote)
    assert c.info["mode"] == "embedding" and c.labels.dtype == np.int64
    np.testing.assert_allclose(c.confidence, (c.aligned == c.labels[None]).mean(axis=0), atol=1e-6)
    # deterministic for a seed; refinement is applied when the spec asks for it
    again = consensus_embedding(spec, embs, single, 5, 0, coords)
    assert np.array_equal(c.labels, again.labels)
    refined = cluster_embedding(spec.with_overrides({"domains.refine_neighbors": 7}), embs[0], 5, 0, coords)
    assert refined.shape == truth.shape


def test_consensus_mode_setting_keeps_hashes_and_is_validated():
    spec = _spec()
    assert "consensus_mode" not in spec.to_dict()["domains"]
    assert spec.hash().startswith("cb2aa28af47e")  # the recipe since the sixth consensus round (CONSENSUS.md)
    # the spec before it (seurat HVGs, the hash in benchmarks/RESULTS.md) still hashes as recorded
    assert spec.with_overrides({"gene.flavor": "seurat"}).hash().startswith("770f3e081d35")
    assert _spec(consensus=5).hash() == _spec(consensus=5, consensus_mode="vote").hash()
    emb = _spec(consensus=5, consensus_mode="embedding")
    assert emb.hash() != _spec(consensus=5).hash() and emb.to_dict()["domains"]["consensus_mode"] == "embedding"
    with pytest.raises(Exception):
        _spec(consensus_mode="average")


def test_fit_consensus_in_embedding_mode_clusters_the_members_embeddings(synthetic_h5ad):
    from stmm_core.pipeline.consensus import agreement
    from stmm_core.pipeline.consensus_embed import consensus_embedding
    from stmm_core.pipeline.consensus_fit import fit_consensus
    from stmm_core.pipeline.run import load_section

    section = load_section(synthetic_h5ad)
    spec = _spec(consensus=2, consensus_mode="embedding").with_overrides(
        {"train.epochs": 30, "gene.n_top_genes": 100, "train.seed": 1})
    res = fit_consensus(spec, section, n_domains=4, processes=1, progress=False)
    block = res.info["consensus"]
    assert block["mode"] == "embedding" and block["seeds"] == [2, 3]
    assert block["start"] in ("restarts", "member 0", "member 1", "vote")
    assert res.member_labels.shape == (2, section.n_spots) and res.confidence.shape == (section.n_spots,)
    assert res.spec.domains.consensus_mode == "embedding"
    # the labels are the task on the two members' embeddings, not their vote; re-derive them from the members
    members = [spec.with_overrides({"train.seed": s, "domains.consensus": 1}) for s in (2, 3)]
    from stmm_graph_fusion.fit import fit_graph_fusion

    fits = [fit_graph_fusion(m, section, n_domains=4, progress=False) for m in members]
    assert all(np.array_equal(f.labels, ml) for f, ml in zip(fits, res.member_labels))
    expect = consensus_embedding(spec, [f.embedding for f in fits], [f.labels for f in fits], 4, 1, section.coords)
    assert np.array_equal(expect.labels, res.labels)
    assert abs(float(res.confidence.mean()) - block["mean_confidence"]) < 1e-6
    assert agreement(res.labels, res.member_labels).confidence.mean() == pytest.approx(block["mean_confidence"])


def test_benchmark_rows_name_the_consensus_mode():
    from stmm_core.benchmark.pipelines import select

    rows = select(["stereomm-expression+consensus5-embedding", "stereomm-expression+consensus3"], [])
    assert [(r.name, r.spec.domains.consensus, r.spec.domains.consensus_mode) for r in rows] == [
        ("stereomm-expression+consensus5-embedding", 5, "embedding"), ("stereomm-expression+consensus3", 3, "vote")]
    assert rows[0].overrides["domains.consensus_mode"] == "embedding"


def test_gmm_keeps_the_start_of_highest_likelihood():
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_tasks.clustering import GMMClustering
    from stmm_tasks.params import GMMParams

    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 300)
    # three long thin parallel bands: k-means initialisation cuts across them, the mixture then stays there
    x = np.stack([rng.normal(0, 20, truth.size), rng.normal(0, 0.3, truth.size) + 2.0 * truth], axis=1)
    task = GMMClustering(GMMParams(n_init=1, pca=None))
    plain = task.run(x, 3, 0)
    assert ari(truth, plain) < 0.5 and "start" not in task.last_info
    assert np.array_equal(task.run_with_starts(x, 3, 0, starts=()), plain)  # no starts: exactly run()
    better = task.run_with_starts(x, 3, 0, starts=[np.zeros(truth.size, int), truth])
    info = task.last_info
    assert ari(truth, better) == pytest.approx(1.0) and info["start"] == 1
    assert np.isnan(info["start_lower_bounds"][0])  # a start with one label instead of K: skipped
    assert info["lower_bound"] > info["restarts_lower_bound"]
    for cov in ("full", "diag"):
        t = GMMClustering(GMMParams(n_init=1, pca=None, covariance=cov))
        assert ari(truth, t.run_with_starts(x, 3, 0, starts=[truth])) == pytest.approx(1.0)
