"""Gene features with PCA are computed in row blocks (never a dense spots × genes matrix) and equal, up to
rounding, what scikit-learn's PCA gives on the dense z-scores - for each solver it would pick."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stmm_core.data.section import Section


def _section(n: int, g: int, seed: int) -> Section:
    """Sparse counts (~85 % zeros) with a few correlated programmes, so the leading axes are well separated."""
    rng = np.random.default_rng(seed)
    programmes = rng.gamma(0.6, 1.0, (4, g)) * (rng.random((4, g)) < 0.3)
    load = rng.dirichlet(np.ones(4) * 0.5, n) * rng.lognormal(1.0, 0.5, (n, 1))
    counts = rng.poisson(load @ programmes * 0.8 + 0.02).astype(np.float32)
    coords = np.stack([np.arange(n) % 50, np.arange(n) // 50], 1).astype(float) * 100
    return Section(name="s", obs_names=pd.Index([f"c{i}" for i in range(n)]), counts=sp.csr_matrix(counts),
                   gene_names=pd.Index([f"g{j}" for j in range(g)]), coords=coords)


def _dense_reference(enc, section: Section) -> tuple[np.ndarray, np.ndarray]:
    """The former computation: dense z-scores of the selected genes, then sklearn's PCA(random_state=0)."""
    from sklearn.decomposition import PCA

    from stmm_genes.hvg import _counts, _library_scale, _normalise

    X = _counts(section)
    idx = [list(section.gene_names).index(gn) for gn in enc.genes]
    Z = enc._scaled(_normalise(X[:, idx], _library_scale(X, enc.target_sum), enc.params.log1p))
    pca = PCA(n_components=enc.pca_components.shape[0], random_state=0).fit(Z)
    return pca.components_, (Z - pca.mean_) @ pca.components_.T


@pytest.mark.parametrize("n,g,k,solver", [(2000, 80, 10, "covariance_eigh"), (300, 200, 8, "full"),
                                          (700, 600, 12, "randomized")])
def test_blocked_pca_equals_sklearn_on_dense_z_scores(monkeypatch, n, g, k, solver):
    import stmm_genes.hvg as hvg
    from stmm_genes.params import HVGParams

    section = _section(n, g, seed=n)
    params = HVGParams(n_top_genes=g, flavor="variance", pca=k)
    whole = hvg.HVGGeneEncoder(params).fit(section)
    out_whole = whole.transform(section)

    rows_seen: list[int] = []
    scaled = hvg.HVGGeneEncoder._scaled

    def spy(self, Y):
        rows_seen.append(Y.shape[0])
        return scaled(self, Y)

    monkeypatch.setattr(hvg, "BLOCK_BYTES", 32 * 1024)  # blocks of 6-100 rows
    monkeypatch.setattr(hvg.HVGGeneEncoder, "_scaled", spy)
    enc = hvg.HVGGeneEncoder(params).fit(section)
    out = enc.transform(section)
    assert max(rows_seen) < n // 2 and len(rows_seen) > 4  # never the whole matrix at once
    monkeypatch.setattr(hvg.HVGGeneEncoder, "_scaled", scaled)

    from sklearn.decomposition import PCA

    probe = PCA(n_components=k, random_state=0)
    probe.fit(np.zeros((n, g), dtype=np.float32) + np.eye(n, g, dtype=np.float32))
    assert probe._fit_svd_solver == solver  # the case this parameter set stands for

    ref_comps, ref_out = _dense_reference(enc, section)
    # same axes with the same signs (sklearn's svd_flip), and the same features, up to float32 rounding
    # (randomised SVD: power iterations in float32 on blocks summed in another order)
    tol = 5e-4 if solver == "randomized" else 1e-4  # observed: 8e-5 and 3e-5
    np.testing.assert_allclose(enc.pca_components, ref_comps, atol=tol)
    scale = np.abs(ref_out).max(axis=0)
    assert (np.abs(out - ref_out).max(axis=0) / scale).max() < tol
    # block size does not matter beyond rounding
    np.testing.assert_allclose(out, out_whole, atol=tol * np.abs(out_whole).max())
    assert out.dtype == np.float32 and out.shape == (n, k)
    assert 0 < enc.info["pca_explained_variance_ratio"] <= 1


def test_blocked_pca_state_round_trip_transforms_identically():
    from stmm_genes.hvg import HVGGeneEncoder
    from stmm_genes.params import HVGParams

    section = _section(400, 120, seed=3)
    enc = HVGGeneEncoder(HVGParams(n_top_genes=60, flavor="variance", pca=6)).fit(section)
    again = HVGGeneEncoder().load_state(enc.state())
    np.testing.assert_array_equal(again.transform(section), enc.transform(section))
