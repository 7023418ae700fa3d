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
    assert spec.hash().startswith("770f3e081d35")  # the hash recorded in benchmarks/RESULTS.md
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
