"""result.h5ad is what scanpy and squidpy read with their default arguments: symbols as var_names, counts in a
layer and log-normalised X, a hires image with true scale factors, stmm's graph under squidpy's keys, and
the colours/names of domains.png."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest

try:
    from tests.conftest_data import dlpfc_h5ad, her2st_c2_h5ad  # noqa: F401 - fixtures
    from tests.small_run import small_run  # noqa: F401
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_data import dlpfc_h5ad, her2st_c2_h5ad  # noqa: F401
    from small_run import small_run  # noqa: F401


@pytest.fixture
def run_dir(small_run):
    return small_run


def test_var_names_are_unique_symbols_with_ids(run_dir):
    out, a = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    assert res.var_names.is_unique
    assert list(res.var_names[:4]) == ["SYM0", "SYM0-1", a.var_names[2], a.var_names[3]]
    ids = list(res.var["gene_ids"])  # genes without counts are left out, the order is kept
    assert ids == [g for g in a.var_names if g in set(ids)] and len(ids) >= a.n_vars - 3


def test_counts_layer_and_log_normalised_x(run_dir):
    out, a = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    counts = res.layers["counts"].toarray()
    np.testing.assert_array_equal(counts, a[:, list(res.var["gene_ids"])].X.toarray())
    expect = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(res.X.toarray(), expect, rtol=1e-5, atol=1e-5)
    assert "log1p" in res.uns and "layers['counts']" in res.uns["stmm"]["X"]


def test_images_and_scale_factors_are_true(run_dir):
    out, a = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    (lib,) = res.uns["spatial"]
    entry = res.uns["spatial"][lib]
    src = a.uns["spatial"]["synthetic"]["images"]["hires"]
    src_scale = a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
    for key in ("hires", "lowres"):
        img = entry["images"][key]
        sf = entry["scalefactors"][f"tissue_{key}_scalef"]
        step = round(src_scale / sf)
        np.testing.assert_array_equal(img, src[::step, ::step])  # the factor maps full-res px onto this array
    assert set(k for k in entry["scalefactors"] if k.endswith("_scalef")) == {"tissue_hires_scalef",
                                                                              "tissue_lowres_scalef"}


def test_domain_colours_match_domains_png(run_dir):
    from stmm_core.domain_colors import domain_palette

    out, a = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    pal = domain_palette(res.obs["stmm_domain"].to_numpy(), a.obs["domain"].to_numpy())
    cats = list(res.obs["stmm_domain"].cat.categories)
    assert cats == sorted(cats, key=lambda s: (len(s), s))
    assert list(res.uns["stmm_domain_colors"]) == [pal.colour[pal.mapping[c]] for c in cats]
    # the matched names domains.png shows, their colours, and the truth's colours agree name by name
    matched = res.obs["stmm_domain_matched"]
    mcol = dict(zip(matched.cat.categories, res.uns["stmm_domain_matched_colors"]))
    tcol = dict(zip(res.obs["domain"].cat.categories, res.uns["domain_colors"]))
    mapping = res.uns["stmm_domain_to_label"]
    for c, colour in zip(cats, res.uns["stmm_domain_colors"]):
        assert mcol[mapping[c]] == colour
        if mapping[c] in tcol:
            assert tcol[mapping[c]] == colour
    assert res.obs["domain"].isna().sum() == 5 and "nan" not in list(res.obs["domain"].cat.categories)
    np.testing.assert_array_equal(matched.astype(str).to_numpy(),
                                  np.array([mapping[c] for c in res.obs["stmm_domain"].astype(str)]))


def test_spatial_graph_under_squidpy_keys(run_dir):
    import json

    out, _ = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    conn, dist = res.obsp["spatial_connectivities"], res.obsp["spatial_distances"]
    assert (conn != conn.T).nnz == 0 and conn.diagonal().sum() == 0
    assert conn.nnz == json.loads((out / "metrics.json").read_text())["info"]["graph"]["edges"]
    assert dist.nnz == conn.nnz and dist.data.min() > 0
    assert res.uns["spatial_neighbors"]["connectivities_key"] == "spatial_connectivities"


def test_default_scanpy_squidpy_calls(run_dir):
    sq = pytest.importorskip("squidpy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    out, _ = run_dir
    res = ad.read_h5ad(out / "result.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "rank_genes_groups on raw count data"
        sq.pl.spatial_scatter(res, color=["stmm_domain", "SYM5"])
        plt.close("all")
        sc.tl.rank_genes_groups(res, "stmm_domain")
        sq.gr.nhood_enrichment(res, cluster_key="stmm_domain")
    assert res.uns["stmm_domain_nhood_enrichment"]["zscore"].shape == (4, 4)
    assert str(res.uns["rank_genes_groups"]["names"][0][0]).startswith(("SYM", "ENSG"))


def test_downsample_reads_bands_and_matches_strided_view():
    from stmm_core.data.image import ArrayImage
    from stmm_core.pipeline.scverse import downsample

    a = np.random.default_rng(0).integers(0, 255, (1001, 707, 3), dtype=np.uint8)
    for side in (2000, 300, 97):
        out, step = downsample(ArrayImage(a), side, band_rows=64)
        assert max(out.shape[:2]) <= side
        np.testing.assert_array_equal(out, a[::step, ::step])


def _adata_for(path):
    from stmm_core.data.readers import read_section
    from stmm_core.domain_colors import domain_palette
    from stmm_core.pipeline.scverse import scverse_adata

    s = read_section(path)
    labels = (np.arange(s.n_spots) % 3)
    return s, scverse_adata(s, np.zeros((s.n_spots, 2), np.float32), labels, domain_palette(labels), None, None, {})


def test_dlpfc_symbols_missing_ones_become_ids(dlpfc_h5ad):
    s, res = _adata_for(dlpfc_h5ad)
    src = ad.read_h5ad(dlpfc_h5ad)
    missing = src.var["symbol"].isna() | (src.var["symbol"].astype(str).str.strip() == "")
    assert res.var_names.is_unique and "MBP" in res.var_names
    assert list(res.var["gene_ids"]) == list(src.var_names)
    assert set(res.var_names[missing.to_numpy()]) == set(src.var_names[missing.to_numpy()])
    entry = res.uns["spatial"]["151676"]
    assert set(entry["images"]) == {"hires", "lowres"}  # the 600-px lowres is all there is: both, true factors
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.045, abs=1e-3)


def test_her2st_full_resolution_jpeg_gives_a_2000px_hires(her2st_c2_h5ad):
    s, res = _adata_for(her2st_c2_h5ad)
    entry = next(iter(res.uns["spatial"].values()))
    hires, sf = entry["images"]["hires"], entry["scalefactors"]["tissue_hires_scalef"]
    assert max(hires.shape[:2]) <= 2000 and max(entry["images"]["lowres"].shape[:2]) <= 600
    step = round(s.image_scale / sf)
    np.testing.assert_array_equal(hires[10:20, 30:40], s.image.read_region(30 * step, 10 * step, 40 * step,
                                                                          20 * step)[::step, ::step])
    xy = res.obsm["spatial"] * sf
    assert xy.min() >= 0 and xy[:, 0].max() < hires.shape[1] and xy[:, 1].max() < hires.shape[0]
