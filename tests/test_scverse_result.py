"""result.h5ad is what scanpy and squidpy read with their default arguments: symbols as var_names, counts in a
layer and log-normalised X, a hires image with true scale factors, stmm's graph under squidpy's keys, and
the colours/names of domains.png."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest

FAST = {"train.epochs": 5, "image.weights": "random", "image.model": "resnet18", "graph.hidden": [32],
        "gene.n_top_genes": 60}


def _section_file(tmp_path):
    from stmm_core.testing.synthetic import make_synthetic_adata

    a = make_synthetic_adata(n_spots=300, n_genes=80, n_domains=4, seed=2)
    ids = [f"ENSG{j:011d}" for j in range(a.n_vars)]
    symbols = [f"SYM{j}" for j in range(a.n_vars)]
    symbols[1] = symbols[0]  # a duplicated symbol → made unique
    symbols[2] = ""  # missing symbols → the ID
    symbols[3] = None
    a.var.index = ids
    a.var["symbol"] = np.array(symbols, dtype=object)
    a.obs["domain"] = a.obs["domain"].astype(object)
    a.obs.iloc[:5, a.obs.columns.get_loc("domain")] = np.nan  # unlabelled spots
    path = tmp_path / "sec.h5ad"
    a.write_h5ad(path)
    return path, a


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.pipeline.run import fit_to_dir

    tmp = tmp_path_factory.mktemp("scverse")
    path, a = _section_file(tmp)
    spec = compose_spec("stereomm", None, FAST)
    fit_to_dir(spec, path, tmp / "run", n_domains=4, labels="domain", device="cpu", progress=False)
    return tmp / "run", a


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
