"""SpatialData zarr stores in and out (optional extra ``spatialdata``).

Reading (``read_section("sample.zarr")``): a table annotating one shapes element (spots/bins: circles or
polygons, their centroids are the positions) and, when present, an image; positions are taken in the ``global``
coordinate system, and the image's transformation to ``global`` must be a scale (Visium readers write
``Scale(1/tissue_hires_scalef)``), so ``global`` units play the role of full-resolution pixels. The image is read
lazily, region by region, from its highest-resolution level.

Writing (``stmm fit/run --zarr``): ``result.zarr`` beside result.h5ad: image ``image`` (the hires image of
result.h5ad, ``Scale`` to ``global``), shapes ``spots`` (circles at the positions, ``Identity``), table ``table``
(result.h5ad's content annotating ``spots``: embedding, domains, colours, graph), all in one ``global`` system.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.data.image import ImageSource
from stmm_core.errors import DataError, MissingDependency

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.section import Section

CS = "global"
ZARR_RESULT = "result.zarr"


def _require() -> Any:
    try:
        import spatialdata
    except ImportError:
        raise MissingDependency("SpatialData stores need the optional extra: pip install 'stmm[spatialdata]'") from None
    return spatialdata


def is_spatialdata(path: Path) -> bool:
    return path.is_dir() and path.suffix.lower() == ".zarr" and any(
        (path / d).is_dir() for d in ("tables", "table", "images", "shapes"))


class XarrayImage(ImageSource):
    """A (c, y, x) image element of a SpatialData store, read region by region (lazy)."""

    def __init__(self, arr: Any, name: str) -> None:
        super().__init__()
        self._arr = arr
        self._name = name
        if "c" not in arr.dims or arr.sizes["c"] not in (1, 3, 4):
            raise DataError(f"image {name!r}: expected 1, 3 or 4 channels (dims {tuple(arr.dims)})")

    @property
    def height(self) -> int:
        return int(self._arr.sizes["y"])

    @property
    def width(self) -> int:
        return int(self._arr.sizes["x"])

    def _read_inside(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        from stmm_core.data.image import to_rgb_uint8

        block = np.asarray(self._arr.isel(x=slice(x0, x1), y=slice(y0, y1)).transpose("y", "x", "c").values)
        return to_rgb_uint8(block[..., :3] if block.shape[-1] >= 3 else np.repeat(block, 3, axis=-1), self._name)

    def _compute_hash(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for y0 in range(0, self.height, 1024):
            h.update(self.read_region(0, y0, self.width, min(self.height, y0 + 1024)).tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        return f"SpatialData image {self._name} {self.width}×{self.height}"


def _affine(element: Any, what: str, path: Path) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    ts = get_transformation(element, get_all=True) or {}
    if CS not in ts:
        raise DataError(f"{path}: {what} has no transformation to the {CS!r} coordinate system (it has: "
                        f"{', '.join(ts) or 'none'}); register image and shapes in {CS!r}")
    return np.asarray(ts[CS].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def load_spatialdata(path: Path, library_id: str | None = None) -> dict[str, Any]:
    """Counts table, positions (``global``) and image of a SpatialData store (see the module docstring)."""
    sd = _require()
    try:
        sdata = sd.read_zarr(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as a SpatialData zarr store ({type(exc).__name__}: {exc})") from None
    tables = dict(sdata.tables)
    if not tables:
        raise DataError(f"{path}: no table (the counts) in this SpatialData store")
    if len(tables) > 1 and library_id not in tables:
        raise DataError(f"{path}: several tables ({', '.join(tables)}); keep one per store")
    key = library_id if library_id in tables else next(iter(tables))
    table = tables[key]
    attrs = table.uns.get("spatialdata_attrs") or {}
    region, region_key, inst = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    if isinstance(region, (list, tuple, np.ndarray)):
        if len(region) != 1:
            raise DataError(f"{path}: table {key!r} annotates several regions ({', '.join(map(str, region))}); "
                            "stmm reads one section: keep one region per table")
        region = region[0]
    if region is None or inst is None or region not in sdata.shapes:
        raise DataError(f"{path}: table {key!r} does not annotate a shapes element (spatialdata_attrs region="
                        f"{region!r}; shapes: {', '.join(sdata.shapes) or 'none'}); parse it with TableModel.parse("
                        "region=<shapes>, region_key=…, instance_key=…)")
    shapes = sdata.shapes[region]
    a = _affine(shapes, f"shapes {region!r}", path)
    cent = shapes.geometry.centroid
    local = np.stack([cent.x.to_numpy(), cent.y.to_numpy()], 1)
    glob = local @ a[:2, :2].T + a[:2, 2]
    pos = {str(i): k for k, i in enumerate(shapes.index)}
    ids = table.obs[inst].astype(str).to_numpy()
    rows = np.array([pos.get(i, -1) for i in ids])
    if (rows < 0).any():
        raise DataError(f"{path}: {(rows < 0).sum()} table rows have no shape in {region!r} (e.g. "
                        f"{ids[rows < 0][0]!r}); instance_key {inst!r} must match the shapes index")
    xy = glob[rows]
    diameter = None
    if "radius" in shapes.columns:
        diameter = float(2 * np.median(shapes["radius"].to_numpy()) * np.sqrt(abs(np.linalg.det(a[:2, :2]))))
    image = scale = None
    if sdata.images:
        name = next(iter(sdata.images))
        elem = sdata.images[name]
        if hasattr(elem, "children") and not hasattr(elem, "dims"):  # multiscale: the full-resolution level
            elem = elem["scale0"].ds[next(iter(elem["scale0"].ds.data_vars))] if "scale0" in elem else elem
        m = _affine(sdata.images[name], f"image {name!r}", path)
        lin, shift = m[:2, :2], m[:2, 2]
        if abs(lin[0, 1]) > 1e-9 or abs(lin[1, 0]) > 1e-9 or np.abs(shift).max() > 1e-6 or lin[0, 0] <= 0 \
                or abs(lin[0, 0] - lin[1, 1]) > 1e-6 * abs(lin[0, 0]):
            raise DataError(f"{path}: image {name!r} maps to {CS!r} by {m[:2].round(6).tolist()}; stmm needs a "
                            "uniform scale (no rotation, shear or translation): register the image with a Scale "
                            "transformation, or pass --image FILE --scale S")
        image, scale = XarrayImage(elem, name), 1.0 / float(lin[0, 0])
    return {"table": table, "xy": xy, "image": image, "scale": scale, "diameter": diameter,
            "name": library_id or path.stem}


def loaded_spatialdata(path: Path, library_id: str | None, counts_layer: str | None) -> Any:
    """:func:`load_spatialdata` as the reader's ``_Loaded`` record (counts from X or ``counts_layer``)."""
    from stmm_core.data.readers import SpatialInfo, _counts_from_adata, _Loaded

    sd = load_spatialdata(path, library_id)
    table = sd["table"].copy()
    table.obsm["spatial"] = sd["xy"]
    if counts_layer is None and "counts" in table.layers:
        counts_layer = "counts"  # a table written by stmm: X is log-normalised, raw counts in layers
    counts = _counts_from_adata(table, counts_layer, path)
    info = SpatialInfo(positions=table.obs.iloc[:0], image=sd["image"], scale=sd["scale"],
                       spot_diameter=sd["diameter"], image_key="spatialdata" if sd["image"] is not None else None)
    table.uns.pop("spatial", None)
    return _Loaded(sd["name"], counts, table.obs_names, table.obs, table.var, sd["xy"], info, table)


def write_result_zarr(path: Path, adata: "anndata.AnnData", section: "Section") -> Path:
    """Write the run's result as a SpatialData store at *path* (see the module docstring)."""
    sd = _require()
    import pandas as pd
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    table = adata.copy()
    lib = next(iter(table.uns.get("spatial", {}) or {}), None)
    entry = (table.uns.get("spatial") or {}).get(lib) or {}
    images = {}
    hires = (entry.get("images") or {}).get("hires")
    if hires is not None:
        s = 1.0 / float(entry["scalefactors"]["tissue_hires_scalef"])
        images["image"] = Image2DModel.parse(np.moveaxis(np.asarray(hires), -1, 0), dims=("c", "y", "x"),
                                             transformations={CS: Scale([s, s], axes=("y", "x"))})
    table.uns.pop("spatial", None)  # the image lives in the store's images element
    ids = pd.Index(np.asarray(table.obs_names).astype(str))
    radius = (section.spot_diameter or _nn_spacing(section.coords)) / 2.0
    shapes = ShapesModel.parse(np.asarray(section.coords, dtype=float), geometry=0,
                               radius=np.full(len(ids), radius), index=ids, transformations={CS: Identity()})
    table.obs["region"] = pd.Categorical(["spots"] * table.n_obs)
    table.obs["spot_id"] = ids.to_numpy()
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    sdata = sd.SpatialData(images=images, shapes={"spots": shapes}, tables={"table": table})
    sdata.write(path)
    return path


def _nn_spacing(coords: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(d[:, 1])) if len(coords) > 1 else 1.0
