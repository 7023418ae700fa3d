"""Consensus domains over seeds (label alignment, vote, confidence), the spec setting, marker genes, and
``stmm run --consensus`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_stmm


def _noisy_copies(n: int = 5, flip: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(5), 200)
    members = []
    for _ in range(n):
        lab = rng.permutation(5)[truth]  # arbitrary ids per member
        m = rng.random(truth.size) < flip
        lab[m] = rng.integers(0, 5, m.sum())
        members.append(lab)
    return truth, members


def test_consensus_recovers_permuted_noisy_labellings():
    from sklearn.metrics import adjusted_rand_score

    from stmm_core.pipeline.consensus import consensus_labels

    truth, members = _noisy_copies()
    c = consensus_labels(members)
    single = [adjusted_rand_score(truth, m) for m in members]
    assert adjusted_rand_score(truth, c.labels) > max(single) + 0.2  # independent noise is voted away
    assert c.labels.dtype == np.int64 and set(np.unique(c.labels)) == set(range(5))
    # confidence = fraction of members whose aligned label is the consensus
    np.testing.assert_allclose(c.confidence, (c.aligned == c.labels[None]).mean(axis=0), rtol=0, atol=1e-6)
    assert 0.6 < c.confidence.mean() < 1.0
    assert c.seed_ari_min <= c.seed_ari_mean < 1.0
    # the order of the members does not change the consensus (up to renaming: ids are ordered by size)
    c2 = consensus_labels(members[::-1])
    assert adjusted_rand_score(c.labels, c2.labels) == pytest.approx(1.0)


def test_identical_members_agree_everywhere_and_alignment_keeps_extra_labels_apart():
    from stmm_core.pipeline.consensus import align_to, consensus_labels, consensus_seeds

    lab = np.array([0, 0, 1, 1, 2, 2])
    c = consensus_labels([lab, (lab + 1) % 3, np.array(["b", "b", "c", "c", "a", "a"])])
    assert (c.confidence == 1).all() and c.seed_ari_mean == pytest.approx(1.0)
    # a member with more labels than the reference: the unmatched label gets a fresh id (≥ K), never a vote
    out = align_to(np.array([0, 0, 1, 1, 1, 1]), np.array([5, 5, 7, 7, 9, 9]), 2)
    assert list(out[:2]) == [0, 0] and min(out[2], out[4]) == 1 and max(out[2], out[4]) >= 2
    assert consensus_seeds(0, 5) == [0, 1, 2, 3, 4] and consensus_seeds(2, 5) == [10, 11, 12, 13, 14]
    assert consensus_seeds(3, 1) == [3]


def test_consensus_setting_leaves_existing_spec_hashes_alone():
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    spec = parse_spec(get_recipe("stereomm-expression")["spec"])
    assert "consensus" not in spec.to_dict()["domains"]
    assert spec.hash().startswith("cb2aa28af47e")  # the recipe since the sixth consensus round (CONSENSUS.md)
    # the spec before it (seurat HVGs, the hash in benchmarks/RESULTS.md) still hashes as recorded
    assert spec.with_overrides({"gene.flavor": "seurat"}).hash().startswith("770f3e081d35")
    on = spec.with_overrides({"domains.consensus": 5})
    assert on.domains.consensus == 5 and on.hash() != spec.hash()
    assert parse_spec(on.to_dict()).domains.consensus == 5
    with pytest.raises(Exception):
        spec.with_overrides({"domains.consensus": 0})


def test_markers_find_the_genes_that_define_each_domain():
    import pandas as pd

    from stmm_core.data.section import Section
    from stmm_core.pipeline.markers import COLUMNS, find_markers
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, g = 300, 40
    labels = np.repeat([0, 1, 2], 100)
    counts = rng.poisson(2.0, size=(n, g)).astype(np.float32)
    for d in range(3):  # gene d*5 is high in domain d only
        counts[labels == d, d * 5] += 30
    section = Section(name="s", obs_names=pd.Index([f"s{i}" for i in range(n)]), counts=sp.csr_matrix(counts),
                      gene_names=pd.Index([f"ENSG{i:05d}" for i in range(g)]), coords=rng.random((n, 2)),
                      gene_symbols=pd.Index([f"SYM{i}" for i in range(g)]))
    df = find_markers(section, labels, n_top=3)
    assert list(df.columns) == COLUMNS
    top = df[df["rank"] == 1].set_index("domain")["gene"].to_dict()
    assert top == {"0": "SYM0", "1": "SYM5", "2": "SYM10"}  # named by symbol
    assert df.loc[df["gene"] == "SYM5", "gene_id"].iloc[0] == "ENSG00005"
    assert len(df) == 9
    lone = labels.copy()
    lone[0] = 7  # a domain of one spot has no statistics: left out, no error
    assert "7" not in set(find_markers(section, lone, n_top=3)["domain"])


def test_run_with_consensus_writes_confidence_markers_and_agreement(synthetic_h5ad, tmp_path):
    import anndata as ad

    out = tmp_path / "run"
    r = run_stmm(["run", "stereomm-expression", "--data", str(synthetic_h5ad), "-o", str(out), "--labels",
                  "domain", "--consensus", "2", "--seed", "1", "--markers", "5", "--set", "train.epochs=40",
                  "--set", "gene.n_top_genes=100", "-q"], env={"STMM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "consensus of 2 seeds (2, 3" in r.stdout
    for f in ("confidence.png", "markers.csv", "markers.png", "domains.png", "result.h5ad"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    c = m["consensus"]
    assert c["seeds"] == [2, 3] and c["n"] == 2 and len(c["member_ari"]) == 2
    assert -1 <= c["seed_ari_min"] <= c["seed_ari_mean"] <= 1
    assert json.loads((out / "spec.json").read_text())["domains"]["consensus"] == 2
    res = ad.read_h5ad(out / "result.h5ad")
    conf = res.obs["stmm_domain_confidence"].to_numpy()
    assert conf.min() >= 0.5 - 1e-6 and conf.max() <= 1.0  # 2 seeds: each spot 1/2 or 2/2
    assert abs(conf.mean() - c["mean_confidence"]) < 1e-5
    assert res.obsm["stmm_domain_seeds"].shape == (res.n_obs, 2)
    mk = res.uns["stmm_markers"]
    assert set(mk["domain"]) == set(res.obs["stmm_domain"].astype(str)) and (mk["rank"] <= 5).all()


def test_consensus_on_a_magic_pipeline_is_one_clear_message(tmp_path):
    r = run_stmm(["run", "magic", "--data", str(tmp_path / "x.h5ad"), "-o", str(tmp_path / "o"),
                  "--consensus", "3"])
    assert r.returncode != 0 and "--consensus" in r.stderr and "Traceback" not in r.stderr


# -- several sections in one fit ---------------------------------------------------------------------------------

@pytest.fixture
def two_sections(tmp_path):
    """Section A (synthetic) and B: A's spots mirrored in y with thinned counts and one gene fewer."""
    import scipy.sparse as sp

    from stmm_core.testing.synthetic import make_synthetic_adata

    a = make_synthetic_adata(n_spots=300, n_genes=120, n_domains=3, seed=1)
    b = a[:, 1:].copy()
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(b.X)
    x.data = rng.binomial(x.data.astype(np.int64), 0.7).astype(np.float32)
    b.X = x
    xy = np.asarray(b.obsm["spatial"], dtype=np.float64).copy()
    xy[:, 1] = xy[:, 1].max() + xy[:, 1].min() - xy[:, 1]  # mirrored within the same image
    b.obsm["spatial"] = xy
    pa, pb = tmp_path / "a.h5ad", tmp_path / "b.h5ad"
    a.write_h5ad(pa)
    b.write_h5ad(pb)
    return pa, pb


def test_combined_sections_share_genes_and_no_graph_edges(two_sections):
    from stmm_core.pipeline.multi_section import combine_sections, cross_section_edges, standardise_per_section
    from stmm_core.pipeline.run import load_section
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    sa, sb = (load_section(p) for p in two_sections)
    c = combine_sections([sa, sb])
    assert c.n_spots == sa.n_spots + sb.n_spots and c.n_genes == len(set(sa.gene_names) & set(sb.gene_names))
    assert c.obs["section"].nunique() == 2 and len(set(c.obs_names)) == c.n_spots
    for name in ("stereomm-expression", "graphst"):  # radius and kNN builders
        assert cross_section_edges(parse_spec(get_recipe(name)["spec"]), c) == 0
    ids = c.meta["section_ids"]
    x = np.random.default_rng(0).normal(size=(c.n_spots, 4)) + ids[:, None] * 5.0
    z = standardise_per_section(x, ids)
    for i in (0, 1):
        np.testing.assert_allclose(z[ids == i].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(z[ids == i].std(axis=0), 1, atol=1e-4)


def test_run_on_two_sections_gives_one_labelling_with_per_section_scores(two_sections, tmp_path):
    import anndata as ad

    out = tmp_path / "joint"
    r = run_stmm(["run", "stereomm-expression", "--data", *map(str, two_sections), "-o", str(out), "--labels",
                  "domain", "--markers", "3", "--set", "train.epochs=40", "--set", "gene.n_top_genes=100", "-q"],
                 env={"STMM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    sec = m["sections"]
    assert sec["cross_section_edges"] == 0 and sec["shared_genes"] <= 119 and len(sec["sections"]) == 2
    per = sec["clustering"]["sections"]
    assert len(per) == 2 and all(v["ari"] > 0.5 for v in per.values()), per  # easy synthetic domains
    assert sec["clustering"]["pooled"]["ari"] == pytest.approx(m["clustering"]["ari"])
    assert sec["clustering"]["domains_same_label_everywhere"].startswith("3 of 3")  # B is A with fewer counts
    res = ad.read_h5ad(out / "result.h5ad")
    assert res.n_obs == 600 and res.obs["section"].nunique() == 2 and "stmm_domain" in res.obs
    assert "section" in r.stdout and "ARI" in r.stdout


def test_batch_correction_needs_several_sections_and_harmony_runs(two_sections, tmp_path):
    r = run_stmm(["run", "stereomm-expression", "--data", str(two_sections[0]), "-o", str(tmp_path / "o"),
                  "--batch-correct", "harmony"])
    assert r.returncode != 0 and "several sections" in r.stderr and "Traceback" not in r.stderr
    pytest.importorskip("harmonypy")
    from stmm_core.pipeline.multi_section import harmony

    rng = np.random.default_rng(0)
    ids, group = np.repeat([0, 1], 300), np.tile(np.repeat([0, 1, 2], 100), 2)  # 3 groups in both sections
    emb = (rng.normal(size=(3, 8))[group] * 6 + rng.normal(size=(600, 8)) + ids[:, None] * 2.0).astype(np.float32)
    z = harmony(emb, ids)
    assert z.shape == emb.shape

    def gap(e):  # distance between the sections' centres of the same group
        return np.mean([np.linalg.norm(e[(ids == 0) & (group == g)].mean(0) - e[(ids == 1) & (group == g)].mean(0))
                        for g in range(3)])

    assert gap(z) < 0.3 * gap(emb)
