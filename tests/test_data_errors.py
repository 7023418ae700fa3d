"""Every user-caused data problem raises one DataError whose (single-line) message names the problem."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stmm_core.data.readers import read_section
from stmm_core.data.validate import filter_section, validate_section
from stmm_core.errors import DataError

try:
    from tests.conftest_data import (  # noqa: F401 - fixtures
        dlpfc_h5ad, dlpfc_spatial, make_adata, make_section, synthetic_image, write_h5ad,
    )
except ImportError:  # pragma: no cover
    from conftest_data import (  # noqa: F401
        dlpfc_h5ad, dlpfc_spatial, make_adata, make_section, synthetic_image, write_h5ad,
    )


def raises(pattern: str, fn, *args, **kwargs) -> str:
    """Call fn, expect a one-line DataError matching *pattern*; return the message."""
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert re.search(pattern, msg), msg
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


# --------------------------------------------------------------------------------- unreadable inputs
def test_missing_path(tmp_path):
    raises(r"not found: .*nope\.h5ad", read_section, tmp_path / "nope.h5ad")


def test_garbage_h5ad(tmp_path):
    (tmp_path / "bad.h5ad").write_bytes(b"this is not hdf5")
    raises(r"not an HDF5/\.h5ad file", read_section, tmp_path / "bad.h5ad")


def test_hdf5_that_is_not_anndata(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5ad", "w") as f:
        f["something"] = np.arange(3)
    raises(r"cannot read .* as AnnData", read_section, tmp_path / "other.h5ad")


def test_unsupported_format(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    raises(r"unsupported data format '\.parquet'", read_section, tmp_path / "x.parquet")


def test_folder_without_matrix(tmp_path):
    raises(r"not a Space Ranger output folder", read_section, tmp_path)


def test_missing_and_corrupt_image(tmp_path):
    path = write_h5ad(tmp_path, make_adata(image=False))
    raises(r"image file not found", read_section, path, image=tmp_path / "he.png", scale=1.0)
    (tmp_path / "he.png").write_bytes(b"\x89PNG garbage")
    raises(r"cannot read image", read_section, path, image=tmp_path / "he.png", scale=1.0)


# ------------------------------------------------------------------------------------- coordinates
def test_no_obsm_spatial(tmp_path):
    ad = make_adata(image=False)
    del ad.obsm["spatial"]
    raises(r"no obsm\['spatial'\]", read_section, write_h5ad(tmp_path, ad))


def test_spatial_wrong_shape(tmp_path):
    ad = make_adata(image=False)
    ad.obsm["spatial"] = np.hstack([ad.obsm["spatial"], np.zeros((ad.n_obs, 1))])
    raises(r"shape \(30, 3\); expected \(30, 2\)", read_section, write_h5ad(tmp_path, ad))


def test_nan_coordinates(tmp_path):
    ad = make_adata(image=False)
    ad.obsm["spatial"][[2, 5], 1] = np.nan
    ad.obsm["spatial"][7, 0] = np.inf
    raises(r"3 spots have NaN/inf coordinates \(e\.g\. 'spot2'\)", read_section, write_h5ad(tmp_path, ad))


def test_duplicate_spot_ids(tmp_path):
    ad = make_adata(image=False)
    ad.obs_names = ["dup"] * 2 + list(ad.obs_names[2:])
    with warnings.catch_warnings():  # anndata may warn about non-unique names
        warnings.simplefilter("ignore")
        path = write_h5ad(tmp_path, ad)
    raises(r"1 duplicate spot ids \(2 entries, e\.g\. 'dup'\)", read_section, path)


def test_duplicate_gene_names(tmp_path):
    ad = make_adata(image=False)
    ad.var_names = ["GENE"] * 3 + list(ad.var_names[3:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_h5ad(tmp_path, ad)
    raises(r"duplicate gene names .*'GENE'.*--unique-ids", read_section, path)
    with pytest.warns(UserWarning, match="repeated gene names made unique"):
        section = read_section(path, unique_ids=True)
    assert list(section.gene_names[:3]) == ["GENE", "GENE-1", "GENE-2"]
    assert list(section.adata.var_names[:3]) == ["GENE", "GENE-1", "GENE-2"]


def test_coords_table_problems(tmp_path):
    ad = make_adata(image=False)
    pd.DataFrame(ad.X.toarray(), index=ad.obs_names, columns=ad.var_names).to_csv(tmp_path / "c.csv")
    raises(r"counts table: pass --coords", read_section, tmp_path / "c.csv")
    pd.DataFrame({"id": ad.obs_names[:-2], "x": 1.0, "y": 2.0}).to_csv(tmp_path / "xy.csv", index=False)
    raises(r"2 of 30 spots have no coordinates \(e\.g\. 'spot28'\)", read_section, tmp_path / "c.csv",
           coords=tmp_path / "xy.csv")
    pd.DataFrame({"id": ad.obs_names, "a": 1.0, "b": 2.0}).to_csv(tmp_path / "ab.csv", index=False)
    raises(r"no coordinate columns", read_section, tmp_path / "c.csv", coords=tmp_path / "ab.csv")
    pd.DataFrame({"id": [f"other{i}" for i in range(30)], "x": 1.0, "y": 2.0}).to_csv(tmp_path / "o.csv", index=False)
    raises(r"counts ids look like 'spot0'", read_section, tmp_path / "c.csv", coords=tmp_path / "o.csv")


def test_non_numeric_counts_table(tmp_path):
    df = pd.DataFrame({"g1": [1, 2], "g2": ["a", "b"]}, index=["s1", "s2"])
    df.to_csv(tmp_path / "c.csv")
    raises(r"non-numeric column.*'g2'", read_section, tmp_path / "c.csv", coords=tmp_path / "c.csv")


# ------------------------------------------------------------------------------------------- counts
def test_nan_counts(tmp_path):
    ad = make_adata(image=False)
    x = ad.X.toarray()
    x[[1, 4], 0] = np.nan
    ad.X = sp.csr_matrix(x)
    raises(r"2 spots have NaN/inf counts \(e\.g\. 'spot1'\)", read_section, write_h5ad(tmp_path, ad))


def test_negative_counts(tmp_path):
    ad = make_adata(image=False)
    x = ad.X.toarray()
    x[[3, 6, 9], 2] = -1.0
    ad.X = sp.csr_matrix(x)
    raises(r"3 spots have negative counts.*raw", read_section, write_h5ad(tmp_path, ad))


def test_empty_matrix(tmp_path):
    ad = make_adata(image=False)
    raises(r"empty count matrix \(0 spots × 12 genes\)", read_section, write_h5ad(tmp_path, ad[:0].copy(), "a.h5ad"))
    raises(r"empty count matrix \(30 spots × 0 genes\)", read_section,
           write_h5ad(tmp_path, ad[:, :0].copy(), "b.h5ad"))


def test_counts_layer_missing(tmp_path):
    raises(r"--counts-layer 'counts' not found", read_section, write_h5ad(tmp_path, make_adata()), counts_layer="counts")


# -------------------------------------------------------------------------------------------- image
def test_image_without_scale(tmp_path):
    from PIL import Image

    Image.fromarray(synthetic_image(50, 50)).save(tmp_path / "he.png")
    path = write_h5ad(tmp_path, make_adata(image=False))
    raises(r"--image needs --scale S", read_section, path, image=tmp_path / "he.png")
    ad = make_adata()
    ad.uns["spatial"]["lib1"]["scalefactors"].pop("tissue_lowres_scalef")
    raises(r"no 'tissue_lowres_scalef'.*pass --scale S", read_section, write_h5ad(tmp_path, ad, "b.h5ad"))


def test_wrong_scale_suggests_other_factor(tmp_path):
    """A lowres image with the hires scale factor: the message names the factor that fits."""
    ad = make_adata()
    sf = ad.uns["spatial"]["lib1"]["scalefactors"]
    sf["tissue_lowres_scalef"], sf["tissue_hires_scalef"] = sf["tissue_hires_scalef"], sf["tissue_lowres_scalef"]
    msg = raises(r"spots fall outside the \d+×\d+ px image after scaling full-res coordinates by 0\.3",
                 read_section, write_h5ad(tmp_path, ad))
    assert "With tissue_hires_scalef=0.1 every spot fits" in msg and "pass --scale 0.1" in msg


def test_dlpfc_lowres_png_with_hires_scale(dlpfc_h5ad, dlpfc_spatial):
    """The classic mistake on real data: the lowres PNG with tissue_hires_scalef."""
    msg = raises(r"spots fall outside the 600×600 px image after scaling full-res coordinates by 0\.150015",
                 read_section, dlpfc_h5ad, image=dlpfc_spatial / "tissue_lowres_image.png", scale=0.150015)
    assert "With tissue_lowres_scalef=0.0450045 every spot fits" in msg and "pass --scale 0.0450045" in msg


def test_swapped_xy_is_detected():
    coords = np.stack([np.linspace(10, 190, 30), np.linspace(5, 45, 30)], axis=1)  # x up to 190, y up to 45
    sec = make_section(image=synthetic_image(200, 50), coords=coords)  # image is 50 wide, 200 high
    raises(r"With x and y swapped", validate_section, sec)


def test_coords_already_in_image_px():
    coords = np.stack([np.linspace(10, 150, 30), np.linspace(5, 100, 30)], axis=1)
    sec = make_section(image=synthetic_image(120, 160), coords=coords, scale=2.0)
    raises(r"With scale 1 every spot fits", validate_section, sec)


def test_bad_scale_and_need_image():
    sec = make_section(image=synthetic_image(20, 20), scale=-1.0)
    raises(r"scale factor -1\.0 must be a positive number", validate_section, sec)
    raises(r"needs a histology image", validate_section, make_section(), need_image=True)


def test_scale_without_image(tmp_path):
    raises(r"--scale was given but there is no image", read_section, write_h5ad(tmp_path, make_adata(image=False)),
           scale=0.5)


def test_her2st_style_missing_image(tmp_path):
    ad = make_adata(image=False)
    ad.uns["image"] = {"path_relative_to_her2st_dir": "ST-imgs/X/x.jpg", "scale_fullres_to_image": 1.0}
    (tmp_path / "h5ad").mkdir()
    raises(r"refers to 'ST-imgs/X/x\.jpg', not found.*--image FILE --scale S", read_section,
           write_h5ad(tmp_path / "h5ad", ad))


def test_several_libraries_need_library_id(tmp_path):
    ad = make_adata()
    ad.uns["spatial"]["lib2"] = ad.uns["spatial"]["lib1"]
    path = write_h5ad(tmp_path, ad)
    raises(r"several libraries \(lib1, lib2\); keep the one", read_section, path)
    raises(r"library_id 'zzz' not in", read_section, path, library_id="zzz")


# ---------------------------------------------------------------------------------------- filtering
def test_filter_section_removes_empty_spots_and_genes(tmp_path):
    ad = make_adata()
    x = ad.X.toarray()
    x[[0, 3], :] = 0
    x[:, 5] = 0
    ad.X = sp.csr_matrix(x)
    s = filter_section(read_section(write_h5ad(tmp_path, ad)))
    assert s.n_spots == 28 and s.n_genes == 11 and "spot0" not in s.obs_names
    assert s.adata.shape == (28, 11) and s.coords.shape == (28, 2) and len(s.obs) == 28
    assert s.meta["filtered"] == {"spots_removed": 2, "genes_removed": 1, "min_counts": 1}
    assert filter_section(s) is s
    # evaluation/prediction keep a gene never detected in the section (a measured zero, not a missing gene)
    from stmm_core.pipeline.run import load_section

    kept = load_section(write_h5ad(tmp_path, ad, name="again.h5ad"), keep_genes=True)
    assert kept.n_spots == 28 and kept.n_genes == 12 and kept.meta["filtered"]["genes_removed"] == 0


def test_filter_to_zero_spots():
    sec = make_section()
    raises(r"zero spots after filtering: all 30 spots have fewer than 1000 total counts \(max \d+\)",
           filter_section, sec, min_counts=1000)


def test_not_a_section():
    raises(r"expected a stmm Section, got dict", validate_section, {})


def test_truncated_jpeg_fails_at_first_read(tmp_path):
    from PIL import Image

    from stmm_core.data.image import open_image

    Image.fromarray(synthetic_image(300, 300)).save(tmp_path / "he.jpg", quality=95)
    data = (tmp_path / "he.jpg").read_bytes()
    (tmp_path / "he.jpg").write_bytes(data[: len(data) // 2])
    img = open_image(tmp_path / "he.jpg")  # the header is intact
    raises(r"cannot decode image .*he\.jpg.*truncated", img.read_region, 0, 0, 10, 10)


def test_scale_far_off_reports_the_largest_fitting_scale():
    coords = np.stack([np.linspace(10, 1000, 30), np.linspace(10, 800, 30)], axis=1)
    sec = make_section(image=synthetic_image(100, 100), coords=coords, scale=0.5)
    raises(r"All spots would fit with a scale up to ≈0\.1", validate_section, sec)
