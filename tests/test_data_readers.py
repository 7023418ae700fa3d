"""Readers: h5ad (scanpy and HER2ST conventions), Space Ranger folders, tables + coords, lazy images."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stmm_core.errors import DataError
from stmm_core.data.image import ArrayImage, PILImage, TiffImage, open_image, to_rgb_uint8
from stmm_core.data.readers import read_10x_h5, read_coords_table, read_section, read_spaceranger_spatial

try:
    from tests.conftest_data import (  # noqa: F401 - fixtures
        dlpfc_h5ad, dlpfc_spatial, her2st_c2_h5ad, make_adata, real_data, synthetic_image, toy_visium, write_h5ad,
    )
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_data import (  # noqa: F401
        dlpfc_h5ad, dlpfc_spatial, her2st_c2_h5ad, make_adata, real_data, synthetic_image, toy_visium, write_h5ad,
    )


# ----------------------------------------------------------------------------------------- real data
def test_dlpfc_h5ad(dlpfc_h5ad):
    s = read_section(dlpfc_h5ad)
    assert (s.n_spots, s.n_genes) == (3460, 5000)
    assert sp.isspmatrix_csr(s.counts) and s.counts.dtype == np.float32
    assert isinstance(s.image, ArrayImage) and (s.image.height, s.image.width) == (600, 600)
    assert s.image_scale == pytest.approx(0.045, abs=1e-3)
    assert s.spot_diameter == pytest.approx(96.4, abs=0.5)
    assert s.name == "151676" and s.meta["image_key"] == "lowres"
    assert s.gene_names[0].startswith("ENSG") and "MBP" in set(s.gene_symbols)
    assert "layer" in s.obs.columns and list(s.obs.index) == list(s.obs_names)
    assert s.adata is not None and s.adata.n_obs == 3460
    np.testing.assert_allclose(s.coords, s.adata.obsm["spatial"])
    xy = s.image_coords()
    assert xy.min() >= 0 and xy.max() < 600


def test_dlpfc_spatial_folder_joined_by_barcode(dlpfc_h5ad, dlpfc_spatial, tmp_path):
    ref = read_section(dlpfc_h5ad)
    info = read_spaceranger_spatial(dlpfc_spatial)
    assert len(info.positions) == 4992 and info.image_key == "lowres"
    joined = read_section(dlpfc_h5ad, coords=dlpfc_spatial)
    np.testing.assert_allclose(joined.coords, ref.coords)
    assert isinstance(joined.image, PILImage) and joined.image_scale == pytest.approx(ref.image_scale)
    np.testing.assert_array_equal(joined.image.to_array(), ref.image.to_array())

    # Shuffled rows, Space Ranger ≥ 2.0 layout (tissue_positions.csv with a header): same coordinates.
    shuffled = tmp_path / "spatial"
    shuffled.mkdir()
    pos = info.positions.drop(columns=["x", "y"]).sample(frac=1.0, random_state=0)
    pos.to_csv(shuffled / "tissue_positions.csv")
    (shuffled / "scalefactors_json.json").write_text((dlpfc_spatial / "scalefactors_json.json").read_text())
    again = read_section(dlpfc_h5ad, coords=shuffled)
    np.testing.assert_allclose(again.coords, ref.coords)
    assert isinstance(again.image, ArrayImage)  # no image in that folder: the h5ad's is kept


def test_toy_visium_folder(toy_visium, tmp_path):
    s = read_section(toy_visium)
    assert (s.n_spots, s.n_genes) == (100, 100)
    assert s.meta["image_key"] == "hires" and s.image_scale == pytest.approx(0.150015)
    assert s.spot_diameter == pytest.approx(89.43, abs=0.01)
    pos = read_spaceranger_spatial(toy_visium / "spatial").positions
    first = s.obs_names[0]
    assert s.coords[0, 0] == pos.loc[first, "pxl_col_in_fullres"]  # x = column
    assert s.coords[0, 1] == pos.loc[first, "pxl_row_in_fullres"]
    counts, barcodes, var = read_10x_h5(toy_visium / "filtered_feature_bc_matrix.h5")
    assert list(barcodes) == list(s.obs_names) and counts.shape == (100, 100)
    # The built AnnData follows the scanpy convention and round-trips through .h5ad.
    ad = s.adata
    assert set(ad.uns["spatial"][s.name]["images"]) == {"hires", "lowres"}
    out = write_h5ad(tmp_path, ad, "toy.h5ad")
    back = read_section(out)
    np.testing.assert_allclose(back.coords, s.coords)
    assert (back.counts != s.counts).nnz == 0 and back.image_scale == pytest.approx(s.image_scale)


def test_her2st_c2_h5ad_with_fullres_jpeg(her2st_c2_h5ad):
    s = read_section(her2st_c2_h5ad)
    assert s.n_spots == 187 and s.n_genes > 15000
    assert isinstance(s.image, PILImage) and s.image.kind == "JPEG"
    assert (s.image.width, s.image.height) == (9274, 9911) and s.image_scale == 1.0
    assert s.gene_symbols is not None and "ERBB2" in set(s.gene_symbols)  # symbols as var_names


def test_her2st_counts_table_plus_spotfile(her2st_c2_h5ad):
    cnts = real_data("her2st", "ST-cnts", "C2.tsv.gz")
    spots = real_data("her2st", "ST-spotfiles", "C2_selection.tsv")
    ref = read_section(her2st_c2_h5ad, image=False)
    s = read_section(cnts, coords=spots)
    assert s.image is None and s.n_spots == 187
    order = s.obs_names.get_indexer(ref.obs_names)
    np.testing.assert_allclose(s.coords[order], ref.coords, atol=0.01)
    np.testing.assert_allclose(np.asarray(s.counts.sum(1)).ravel()[order], np.asarray(ref.counts.sum(1)).ravel())


# ------------------------------------------------------------------------------------ synthetic h5ad
def test_synthetic_h5ad_roundtrip(tmp_path):
    ad = make_adata(25, 10)
    s = read_section(write_h5ad(tmp_path, ad))
    assert s.name == "lib1" and s.image_scale == 0.1 and s.spot_diameter == 40.0
    assert list(s.gene_symbols) == [f"SYM{j}" for j in range(10)]
    np.testing.assert_array_equal(s.image.to_array(), ad.uns["spatial"]["lib1"]["images"]["lowres"])
    assert s.obs["label"].tolist() == ad.obs["label"].tolist()


def test_h5ad_without_image_is_expression_only(tmp_path):
    s = read_section(write_h5ad(tmp_path, make_adata(image=False)))
    assert s.image is None and s.image_scale is None


def test_h5ad_with_user_image(tmp_path):
    from PIL import Image

    img = synthetic_image(60, 70)
    Image.fromarray(img).save(tmp_path / "he.png")
    s = read_section(write_h5ad(tmp_path, make_adata(image=False)), image=tmp_path / "he.png", scale=0.2)
    assert s.image_scale == 0.2 and s.meta["image_key"] == "user"
    np.testing.assert_array_equal(s.image.to_array(), img)
    assert read_section(write_h5ad(tmp_path, make_adata()), image=False).image is None


def test_float_image_in_uns_and_library_id(tmp_path):
    ad = make_adata()
    lib = ad.uns["spatial"]["lib1"]
    lib["images"]["lowres"] = lib["images"]["lowres"].astype(np.float32) / 255.0
    ad.uns["spatial"]["lib2"] = lib
    path = write_h5ad(tmp_path, ad)
    s = read_section(path, library_id="lib2")
    assert s.name == "lib2" and s.image.to_array().dtype == np.uint8


def test_counts_layer_and_raw(tmp_path):
    ad = make_adata()
    counts = ad.X.copy()
    ad.layers["counts"] = counts
    ad.raw = ad.copy()
    ad.X = sp.csr_matrix(np.log1p(counts.toarray()) + 0.5)
    path = write_h5ad(tmp_path, ad)
    with pytest.raises(DataError, match="'counts', 'raw' hold integer counts; pass --counts-layer counts"):
        read_section(path)  # normalised X while a layer and raw hold counts: never silently used
    np.testing.assert_allclose(read_section(path, counts_layer="X").counts.toarray(), ad.X.toarray(), rtol=1e-6)
    for layer in ("counts", "raw"):
        s = read_section(path, counts_layer=layer)
        np.testing.assert_array_equal(s.counts.toarray(), counts.toarray())


def test_counts_table_with_coords_and_image(tmp_path):
    from PIL import Image

    ad = make_adata(image=False)
    df = pd.DataFrame(ad.X.toarray(), index=ad.obs_names, columns=ad.var_names)
    df.to_csv(tmp_path / "counts.tsv.gz", sep="\t")
    xy = pd.DataFrame({"id": ad.obs_names, "x": ad.obsm["spatial"][:, 0], "y": ad.obsm["spatial"][:, 1]})
    xy.sample(frac=1.0, random_state=1).to_csv(tmp_path / "coords.csv", index=False)  # row order differs
    Image.fromarray(synthetic_image(80, 80)).save(tmp_path / "he.jpg")
    s = read_section(tmp_path / "counts.tsv.gz", coords=tmp_path / "coords.csv", image=tmp_path / "he.jpg", scale=0.2)
    np.testing.assert_allclose(s.coords, ad.obsm["spatial"])
    np.testing.assert_array_equal(s.counts.toarray(), ad.X.toarray())
    assert s.adata.obsm["spatial"].shape == (ad.n_obs, 2)
    assert s.adata.uns["spatial"][s.name]["scalefactors"]["tissue_hires_scalef"] == 0.2
    back = read_section(write_h5ad(tmp_path, s.adata, "built.h5ad"))
    assert back.image_scale == 0.2 and back.image.width == 80
    coords = read_coords_table(tmp_path / "coords.csv")
    assert list(coords.columns) == ["x", "y"]


def test_10x_h5_keeps_gene_expression_only(tmp_path):
    import h5py

    m = sp.random(5, 4, density=0.6, random_state=0, format="csc", dtype=np.float64)  # features × barcodes
    m.data = np.ceil(m.data * 5)
    with h5py.File(tmp_path / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
        g["shape"] = np.array(m.shape)
        g["barcodes"] = np.array([f"BC{i}-1".encode() for i in range(4)])
        feat = g.create_group("features")
        feat["id"] = np.array([f"ENSG{i:011d}".encode() for i in range(5)])
        feat["name"] = np.array([f"G{i}".encode() for i in range(5)])
        feat["feature_type"] = np.array([b"Gene Expression"] * 4 + [b"Antibody Capture"])
    counts, barcodes, var = read_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5")
    assert counts.shape == (4, 4) and list(var["symbol"]) == ["G0", "G1", "G2", "G3"]
    np.testing.assert_array_equal(counts.toarray(), m.T.toarray()[:, :4])


# ------------------------------------------------------------------------------------------- images
def test_array_image_conversions():
    rgb = synthetic_image(10, 12)
    assert ArrayImage(rgb.astype(np.float32) / 255.0).to_array().dtype == np.uint8
    np.testing.assert_array_equal(ArrayImage(np.dstack([rgb, np.full((10, 12), 7, np.uint8)])).to_array(), rgb)
    grey = ArrayImage(rgb[:, :, 0]).to_array()
    assert grey.shape == (10, 12, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert to_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    a, b = ArrayImage(rgb), ArrayImage(rgb.copy())
    assert a.content_hash() == b.content_hash() != ArrayImage(rgb[::-1]).content_hash()


def test_read_region_pads_outside():
    rgb = synthetic_image(10, 12)
    img = ArrayImage(rgb)
    r = img.read_region(-3, 8, 5, 14, pad_value=7)
    assert r.shape == (6, 8, 3)
    np.testing.assert_array_equal(r[:2, 3:], rgb[8:10, 0:5])
    assert (r[2:] == 7).all() and (r[:, :3] == 7).all()
    assert (img.read_region(100, 100, 104, 102) == 255).all()


def test_png_rgba_composited_on_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (10, 20, 30, 255)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = open_image(tmp_path / "a.png")
    assert (img.width, img.height) == (8, 8) and img._arr is None  # header only until the first read
    r = img.read_region(0, 0, 8, 8)
    assert (r[:4] == (10, 20, 30)).all() and (r[4:] == 255).all()


@pytest.mark.parametrize("kind", ["tiled-pyramid", "plain", "planar"])
def test_tiff_region_reads(tmp_path, kind):
    tifffile = pytest.importorskip("tifffile")
    rgb = synthetic_image(300, 260)
    path = tmp_path / "img.ome.tif"
    if kind == "tiled-pyramid":
        with tifffile.TiffWriter(path) as tw:
            tw.write(rgb, subifds=1, tile=(64, 64), compression="zlib", metadata={"axes": "YXS"})
            tw.write(rgb[::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib")
    elif kind == "plain":
        tifffile.imwrite(path, rgb)
    else:
        tifffile.imwrite(path, np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    img = open_image(path)
    assert isinstance(img, TiffImage) and (img.width, img.height) == (260, 300)
    np.testing.assert_array_equal(img.read_region(250, 290, 270, 310)[:10, :10], rgb[290:, 250:])
    np.testing.assert_array_equal(img.read_region(10, 20, 74, 90), rgb[20:90, 10:74])


def test_tiff_without_zarr_uses_memmap_or_full_decode(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr → ImportError
    rgb = synthetic_image(50, 40)
    tifffile.imwrite(tmp_path / "plain.tif", rgb)
    tifffile.imwrite(tmp_path / "zlib.tif", rgb, compression="zlib")
    plain, packed = open_image(tmp_path / "plain.tif"), open_image(tmp_path / "zlib.tif")
    np.testing.assert_array_equal(plain.to_array(), rgb)
    np.testing.assert_array_equal(packed.to_array(), rgb)
    assert plain.access == "memmap" and packed.access == "decoded"
