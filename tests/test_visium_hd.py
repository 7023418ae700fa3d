"""Visium HD (Space Ranger 3 ``binned_outputs/``) on format-exact fixtures written from the documented layout:
bin sizes, positions joined by barcode, the full-resolution image read lazily, the 2 µm cost message and
regions, and one clear message for every malformed variant."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_stmm
from stmm_core.data.readers import read_section
from stmm_core.errors import DataError

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def hd(tmp_path_factory):
    from stmm_core.testing.visium_hd import write_visium_hd

    root = tmp_path_factory.mktemp("hd") / "sample"
    write_visium_hd(root, capture_um=160, n_genes=50, full_res_tiff=True, seed=3)
    return root


@pytest.fixture
def hd_copy(hd, tmp_path):
    dst = tmp_path / "sample"
    shutil.copytree(hd, dst)
    return dst


@pytest.mark.parametrize("bin_um", [2, 8, 16])
def test_each_bin_size_matches_its_positions(hd, bin_um):
    folder = hd / "outs" / "binned_outputs" / f"square_{bin_um:03d}um"
    pos = pd.read_parquet(folder / "spatial" / "tissue_positions.parquet").set_index("barcode")
    sf = json.loads((folder / "spatial" / "scalefactors_json.json").read_text())
    s = read_section(hd / "outs", bin_size=bin_um)
    assert s.n_spots == int(pos["in_tissue"].sum()) and s.n_genes == 50
    assert all(b.startswith(f"s_{bin_um:03d}um_") for b in s.obs_names[:5])
    np.testing.assert_array_equal(s.coords[:, 0], pos.loc[s.obs_names, "pxl_col_in_fullres"])
    np.testing.assert_array_equal(s.coords[:, 1], pos.loc[s.obs_names, "pxl_row_in_fullres"])
    assert s.spot_diameter == pytest.approx(bin_um / sf["microns_per_pixel"])
    assert s.meta["scalefactors"]["microns_per_pixel"] == sf["microns_per_pixel"]
    assert s.meta["image_key"] == "hires" and s.image_scale == pytest.approx(sf["tissue_hires_scalef"])
    assert s.name == f"sample_{bin_um:03d}um"


def test_default_is_8um_and_any_folder_level_works(hd):
    ref = read_section(hd / "outs")
    assert ref.name.endswith("_008um")
    for p in (hd, hd / "outs" / "binned_outputs", hd / "outs" / "binned_outputs" / "square_008um"):
        s = read_section(p)
        assert list(s.obs_names) == list(ref.obs_names)
    with pytest.raises(DataError, match="holds 8 µm bins but --bin-size 16"):
        read_section(hd / "outs" / "binned_outputs" / "square_008um", bin_size=16)


def test_full_resolution_image_is_lazy_with_scale_one(hd):
    from stmm_core.data.image import TiffImage

    s = read_section(hd, image=hd / "microscope.tif")
    assert isinstance(s.image, TiffImage) and s.image_scale == 1.0
    xy = s.image_coords()
    assert xy.min() >= 0 and xy[:, 0].max() < s.image.width and xy[:, 1].max() < s.image.height


def test_2um_whole_section_says_cost_and_region_reads_a_part(hd, monkeypatch):
    import stmm_core.data.visium_hd as vhd

    full = read_section(hd, bin_size=2)
    monkeypatch.setattr(vhd, "MAX_WHOLE_SECTION_BINS", 1000)
    with pytest.raises(DataError) as exc:
        read_section(hd, bin_size=2)
    msg = str(exc.value)
    assert f"{full.n_spots:,} bins" in msg and "GB" in msg and "--bin-size 8" in msg and "--region" in msg
    x0, y0 = np.percentile(full.coords, 40, axis=0)
    x1, y1 = np.percentile(full.coords, 55, axis=0)
    part = read_section(hd, bin_size=2, region=f"{x0},{y0},{x1},{y1}")
    inside = ((full.coords[:, 0] >= x0) & (full.coords[:, 0] < x1) & (full.coords[:, 1] >= y0)
              & (full.coords[:, 1] < y1))
    assert 0 < part.n_spots == inside.sum() < 1000
    ref = pd.DataFrame(full.counts[inside].toarray(), index=full.obs_names[inside])
    np.testing.assert_array_equal(ref.loc[part.obs_names].to_numpy(), part.counts.toarray())
    with pytest.raises(DataError, match="X0,Y0,X1,Y1"):
        read_section(hd, bin_size=2, region="1,2,3")
    with pytest.raises(DataError, match="no bins"):
        read_section(hd, bin_size=2, region="0,0,1,1")


def _bins(root, b=8):
    return root / "outs" / "binned_outputs" / f"square_{b:03d}um"


def test_missing_parquet_column(hd_copy):
    p = _bins(hd_copy) / "spatial" / "tissue_positions.parquet"
    pd.read_parquet(p).drop(columns=["pxl_col_in_fullres"]).to_parquet(p, index=False)
    with pytest.raises(DataError, match="pxl_col_in_fullres missing"):
        read_section(hd_copy)


def test_bin_folder_absent(hd_copy):
    shutil.rmtree(_bins(hd_copy, 16))
    with pytest.raises(DataError, match=r"no square_016um/ .*present: 2, 8 µm.*--bin-size"):
        read_section(hd_copy, bin_size=16)


def test_scalefactors_without_microns_per_pixel(hd_copy):
    p = _bins(hd_copy) / "spatial" / "scalefactors_json.json"
    sf = json.loads(p.read_text())
    del sf["microns_per_pixel"]
    p.write_text(json.dumps(sf))
    with pytest.raises(DataError, match="no microns_per_pixel"):
        read_section(hd_copy)


def test_matrix_absent(hd_copy):
    (_bins(hd_copy) / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(DataError, match="no filtered_feature_bc_matrix.h5"):
        read_section(hd_copy)


def test_region_on_non_hd_data_and_cli_bin_size(hd, tmp_path, toy_visium_or_skip):
    with pytest.raises(DataError, match="--region applies to Visium HD"):
        read_section(toy_visium_or_skip, region="0,0,10,10")
    r = run_stmm(["run", "stereomm", "--data", str(hd), "--bin-size", "32", "-o", str(tmp_path / "o"), "-k", "3"])
    assert r.returncode == 2 and "no square_032um/" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "result.h5ad").exists()


@pytest.fixture
def toy_visium_or_skip():
    from conftest import shared_data_dir

    p = shared_data_dir() / "toy_visium"
    if not p.is_dir():
        pytest.skip("toy_visium not found")
    return p


def test_cli_fit_on_hd_bins_with_zarr(hd, tmp_path):
    import anndata as ad

    try:
        import spatialdata  # noqa: F401

        zarr = ["--zarr"]
    except ImportError:
        zarr = []
    out = tmp_path / "run"
    r = run_stmm(["run", "stereomm-expression", "--data", str(hd), "--bin-size", "16", "-k", "3",
                  "--set", "train.epochs=5", "-q", "-o", str(out), *zarr])
    assert r.returncode == 0, r.stderr
    res = ad.read_h5ad(out / "result.h5ad")
    assert res.obs_names[0].startswith("s_016um_") and res.uns["spatial"]["sample_016um"]["scalefactors"][
        "bin_size_um"] == 16.0
    assert (out / "report.html").is_file() and (out / "result.zarr").is_dir() == bool(zarr)
