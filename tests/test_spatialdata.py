"""SpatialData: result.zarr (image, spot shapes, result table in one 'global' system) round-trips through
spatialdata and back into stmm; a SpatialData store is read as a section; wrong transformations and unannotated
tables end in one clear message."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from stmm_core.data.readers import read_section
from stmm_core.errors import DataError

sd = pytest.importorskip("spatialdata")
from spatialdata.models import Image2DModel, ShapesModel, TableModel  # noqa: E402
from spatialdata.transformations import Identity, Scale, Translation, get_transformation  # noqa: E402

try:
    from tests.small_run import small_run  # noqa: F401 - fixture
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from small_run import small_run  # noqa: F401


def test_result_zarr_lines_up_in_global(small_run):
    out, _ = small_run
    h5 = ad.read_h5ad(out / "result.h5ad")
    sdata = sd.read_zarr(out / "result.zarr")
    for elem in (sdata.images["image"], sdata.shapes["spots"]):
        assert set(get_transformation(elem, get_all=True)) == {"global"}
    table = sdata.tables["table"]
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert list(table.obs_names) == list(h5.obs_names)
    np.testing.assert_array_equal(table.obs["stmm_domain"], h5.obs["stmm_domain"])
    assert list(table.uns["stmm_domain_colors"]) == list(h5.uns["stmm_domain_colors"])
    np.testing.assert_array_equal(table.obsm["X_stmm"], h5.obsm["X_stmm"])
    # spot centres in 'global' are the full-resolution positions; the image maps onto them with its scale
    shp = sdata.shapes["spots"].loc[table.obs["spot_id"]]
    np.testing.assert_allclose(np.stack([shp.geometry.x, shp.geometry.y], 1), h5.obsm["spatial"])
    (lib,) = h5.uns["spatial"]
    sf = h5.uns["spatial"][lib]["scalefactors"]["tissue_hires_scalef"]
    m = get_transformation(sdata.images["image"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(np.diag(m)[:2], 1 / sf)
    img = np.moveaxis(np.asarray(sdata.images["image"].values), 0, -1)
    np.testing.assert_array_equal(img, h5.uns["spatial"][lib]["images"]["hires"])


def test_result_zarr_reads_back_as_a_section(small_run):
    out, _ = small_run
    h5 = ad.read_h5ad(out / "result.h5ad")
    s = read_section(out / "result.zarr")
    np.testing.assert_allclose(s.coords, h5.obsm["spatial"])
    np.testing.assert_array_equal(s.counts.toarray(), h5.layers["counts"].toarray())
    (lib,) = h5.uns["spatial"]
    entry = h5.uns["spatial"][lib]
    assert s.image_scale == pytest.approx(entry["scalefactors"]["tissue_hires_scalef"])
    np.testing.assert_array_equal(s.image.to_array(), entry["images"]["hires"])
    assert s.spot_diameter == pytest.approx(entry["scalefactors"]["spot_diameter_fullres"])


def _store(tmp_path, image_t=None, annotate=True, name="in.zarr"):
    from stmm_core.testing.synthetic import make_synthetic_adata

    a = make_synthetic_adata(n_spots=100, n_genes=30, n_domains=3, seed=4)
    entry = a.uns["spatial"]["synthetic"]
    sf = entry["scalefactors"]["tissue_hires_scalef"]
    microns = 0.5  # shapes stored in µm, mapped to 'global' (full-res px) by a Scale
    ids = pd.Index([f"s{i}" for i in range(a.n_obs)])
    shapes = ShapesModel.parse(a.obsm["spatial"] * microns, geometry=0, radius=np.full(a.n_obs, 10.0),
                               index=ids, transformations={"global": Scale([1 / microns, 1 / microns],
                                                                           axes=("x", "y"))})
    img = Image2DModel.parse(np.moveaxis(entry["images"]["hires"], -1, 0), dims=("c", "y", "x"),
                             transformations={"global": image_t or Scale([1 / sf, 1 / sf], axes=("y", "x"))})
    t = ad.AnnData(a.X.copy(), obs=pd.DataFrame({"domain": a.obs["domain"].to_numpy()}, index=ids), var=a.var)
    t.obs["region"] = pd.Categorical(["spots"] * a.n_obs)
    t.obs["inst"] = ids.to_numpy()[::-1]  # instance ids in another order than the shapes: joined by id
    t.obs_names = t.obs["inst"].to_numpy()
    t.X = a.X[::-1].copy()
    if annotate:
        t = TableModel.parse(t, region="spots", region_key="region", instance_key="inst")
    sd.SpatialData(images={"he": img}, shapes={"spots": shapes}, tables={"table": t}).write(tmp_path / name)
    return tmp_path / name, a


def test_spatialdata_store_is_read_as_a_section(tmp_path):
    path, a = _store(tmp_path)
    s = read_section(path)
    order = np.array([int(i[1:]) for i in s.obs_names])
    np.testing.assert_allclose(s.coords, a.obsm["spatial"][order])
    np.testing.assert_array_equal(s.counts.toarray(), a.X[order].toarray())
    sf = a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
    assert s.image_scale == pytest.approx(sf) and s.spot_diameter == pytest.approx(20 / 0.5)
    np.testing.assert_array_equal(s.image.read_region(5, 7, 25, 19),
                                  a.uns["spatial"]["synthetic"]["images"]["hires"][7:19, 5:25])


def test_wrong_transformation_and_unannotated_table(tmp_path):
    path, _ = _store(tmp_path, image_t=Translation([10.0, 0.0], axes=("x", "y")), name="shifted.zarr")
    with pytest.raises(DataError, match="uniform scale .*--image FILE --scale S"):
        read_section(path)
    path, _ = _store(tmp_path, annotate=False, name="plain.zarr")
    with pytest.raises(DataError, match="does not annotate a shapes element"):
        read_section(path)
