"""Stereo-seq: GEM files and cell/DNB-level data binned to B × B DNB bins."""

from __future__ import annotations

import numpy as np
import pytest

from stmm_core.data.stereo import bin_adata, bin_points, read_gem
from stmm_core.errors import DataError


def _gem(path, rng, n=2000):
    x = rng.integers(0, 200, n)
    y = rng.integers(0, 100, n)
    g = rng.integers(0, 30, n)
    c = rng.integers(1, 5, n)
    with open(path, "w") as fh:
        fh.write("#FileFormat=GEMv0.1\n#BinSize=1\ngeneID\tx\ty\tMIDCount\n")
        for row in zip(g, x, y, c):
            fh.write(f"G{row[0]}\t{row[1]}\t{row[2]}\t{row[3]}\n")
    return x, y, g, c


def test_read_gem_bins_sum_counts_per_bin_and_gene(tmp_path):
    rng = np.random.default_rng(0)
    x, y, g, c = _gem(tmp_path / "s.gem", rng)
    a = read_gem(tmp_path / "s.gem", bin_size=50)
    assert a.X.sum() == c.sum()
    assert a.n_obs == len({(i // 50, j // 50) for i, j in zip(x, y)}) == 8
    # one bin, one gene, by hand
    sel = (x // 50 == 1) & (y // 50 == 0) & (g == 3)
    row = list(a.obs_names).index("1_0")
    assert a[row, "G3"].X.sum() == c[sel].sum()
    np.testing.assert_allclose(a.obsm["spatial"][row], [75.0, 25.0])


def test_read_section_reads_gem_as_bins(tmp_path):
    from stmm_core.data.readers import read_section

    _gem(tmp_path / "s.gem", np.random.default_rng(1))
    sec = read_section(tmp_path / "s.gem", bin_size=25)
    assert sec.n_spots == 32 and sec.spot_diameter == 25.0
    assert sec.coords.min() == 12.5


def test_bin_adata_keeps_every_cell_and_rejects_bad_input():
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    X = sp.random(500, 20, density=0.1, random_state=0, format="csr", dtype=np.float32)
    X.data = np.ceil(X.data * 5)
    cells = ad.AnnData(X=X)
    cells.obsm["spatial"] = rng.uniform(0, 400, size=(500, 2))
    bins = bin_adata(cells, 100)
    assert bins.n_obs == 16 and bins.X.sum() == X.sum()
    np.testing.assert_allclose(np.asarray(bins.X.sum(0)).ravel(), np.asarray(X.sum(0)).ravel())
    with pytest.raises(DataError):
        bin_points(np.array([-5.0]), np.array([1.0]), np.array([0]), np.array([1.0]), 1, 10)


def test_synthetic_stereo_section_and_lazy_tiff_tiles_through_workers(tmp_path):
    from stmm_core.data.image import open_image
    from stmm_core.data.readers import read_section
    from stmm_core.data.tile_loader import tile_batches
    from stmm_core.data.tiles import iter_tiles
    from stmm_core.testing.stereo_synthetic import make_stereo_like, write_synthetic_tiff

    a = make_stereo_like(3000, n_genes=100, seed=0, image_feature_dim=8)
    assert a.n_obs == 3000 and a.obs["domain"].nunique() == 7
    assert 0.85 < a.uns["synthetic"]["zero_fraction"] < 0.97
    assert a.obsm["X_image_features"].shape == (3000, 8)
    info = write_synthetic_tiff(tmp_path / "img.tif", a.uns["synthetic"]["extent_px"], 7, image_scale=0.2, tile=64)
    img = open_image(info["path"])
    img.read_region(0, 0, 8, 8)
    assert img.access == "zarr" and img.width == info["size_px"]
    a.write_h5ad(tmp_path / "s.h5ad")
    sec = read_section(tmp_path / "s.h5ad", image=info["path"], scale=0.2)
    rows = slice(100, 900)
    ref = np.concatenate(list(iter_tiles(sec, 50.0, 16, batch_size=64)))[rows]
    pairs = list(tile_batches(sec, 50.0, 16, batch_size=64, workers=2, lo=100, hi=900))
    assert [start for start, _ in pairs] == list(range(0, 800, 64))  # in order, offsets relative to lo
    np.testing.assert_array_equal(np.concatenate([arr for _, arr in pairs]), ref)
