"""Read one section (counts + coordinates + optional image) into a :class:`Section`.

:func:`read_section` dispatches on *path*:

* ``*.h5ad`` — scanpy/squidpy convention (``obsm["spatial"]`` = (x, y) full-res px; image and scale
  factors in ``uns["spatial"][library_id]``) or the HER2ST convention (``uns["image"]`` with
  ``path_relative_to_her2st_dir`` and ``scale_fullres_to_image``);
* a Space Ranger output folder (``filtered_feature_bc_matrix.h5`` + ``spatial/``), or a 10x ``.h5`` file;
* a SpatialData zarr store (``*.zarr``: a table annotating spot shapes, an image; :mod:`stmm_core.data.spatialdata_io`);
* a Visium HD Space Ranger 3 folder (``binned_outputs/square_XXXum``), one bin size (:mod:`stmm_core.data.visium_hd`);
* a Stereo-seq GEM file (``.gem``/``.gem.gz``), binned at ``bin_size`` DNB (:mod:`stmm_core.data.stereo`);
* a counts table (``.csv``/``.tsv``/``.txt``, optionally ``.gz``; spots × genes, first column = spot id)
  with ``coords=`` a table of ``id, x, y`` (full-res px) or a Space Ranger ``spatial/`` folder.

``coords=`` also works with an h5ad or Space Ranger matrix: positions are then joined **by spot id**.
Every problem a user can fix raises :class:`~stmm_core.errors.DataError` with one clear message.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.data.image import ArrayImage, ImageSource, as_image_source, open_image
from stmm_core.data.section import Section
from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
#: Images stored inline in a built AnnData's ``uns["spatial"]`` only up to this side (keeps .h5ad small).
_MAX_INLINE_IMAGE_SIDE = 4000


@dataclass
class SpatialInfo:
    """Positions and (optional) image of a section, before joining to the counts."""

    positions: "pd.DataFrame"  # index = spot id; columns x, y (full-res px), maybe more
    image: ImageSource | None = None
    scale: float | None = None
    spot_diameter: float | None = None
    scalefactors: dict[str, float] = field(default_factory=dict)
    image_key: str | None = None
    images_inline: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers
def _exists(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: {path}; check the path (relative paths are from {Path.cwd()})")
    return path


def _is_table(path: Path) -> bool:
    return path.name.lower().endswith(_TABLE_SUFFIXES)


def _table_sep(path: Path) -> str:
    return "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"


def _gene_symbols(var: "pd.DataFrame") -> "pd.Index | None":
    """Gene symbols from the usual ``var`` columns, or ``var_names`` when they are not Ensembl ids."""
    import pandas as pd

    for col in ("symbol", "gene_symbols", "gene_symbol", "gene_name", "feature_name", "SYMBOL"):
        if col in var.columns:
            return pd.Index(var[col].astype(str).to_numpy(), name="symbol")
    names = var.index.astype(str)
    if len(names) and not any(_ENSEMBL.match(n) for n in names[:200]):
        return pd.Index(names.to_numpy(), name="symbol")  # e.g. scanpy's read_visium: symbols as var_names
    return None


def _to_csr(x: Any, what: str) -> Any:
    import scipy.sparse as sp

    try:
        m = sp.csr_matrix(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} is not a numeric matrix ({exc}); store raw counts as numbers") from None
    m.sum_duplicates()
    return m


def _integer_valued(d: np.ndarray) -> bool:
    """Finite entries of *d* all integers (NaN/inf are reported by validate_section)."""
    d = d[np.isfinite(d)]
    return bool(np.all(d == np.round(d)))


def _looks_like_counts(m: Any) -> bool:
    """Integer values in the first 100k stored entries of CSR ``m``."""
    return _integer_valued(m.data[: 100_000])


def _layer_looks_like_counts(layer: Any) -> bool:
    """A layer (dense or sparse) whose first 100k stored entries are non-negative integers, not all zero."""
    import scipy.sparse as sp

    try:
        d = layer.data[: 100_000] if sp.issparse(layer) else np.asarray(layer).ravel()[: 100_000]
        d = np.asarray(d, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.nanmax(d, initial=0.0) > 0 and np.nanmin(d, initial=0.0) >= 0 and _integer_valued(d))


def _counts_from_adata(adata: "anndata.AnnData", counts_layer: str | None, path: Path) -> Any:
    """CSR float32 counts from ``layers[counts_layer]``, ``adata.raw`` (``counts_layer="raw"``) or ``X``.

    Without ``counts_layer`` we use ``X`` and never guess: if ``X`` holds non-integer values (it looks
    normalised) while a layer or ``adata.raw`` holds integer counts, the read is refused with the flag that picks
    them (``--counts-layer NAME``, or ``--counts-layer X`` to keep ``X``); with no such alternative a warning says
    so. ``counts_layer="X"`` takes ``X`` as it is, without the check.
    """
    if counts_layer is None or (counts_layer == "X" and "X" not in adata.layers):
        m = _to_csr(adata.X, f"{path}: X")
        if counts_layer is None and m.nnz and not _looks_like_counts(m):
            found = [name for name in adata.layers if _layer_looks_like_counts(adata.layers[name])]
            if adata.raw is not None and adata.raw.n_vars and _layer_looks_like_counts(adata.raw.X):
                found.append("raw")
            if found:
                raise DataError(
                    f"{path}: X has non-integer values (normalised?) but {', '.join(repr(f) for f in found)} "
                    f"{'holds' if len(found) == 1 else 'hold'} integer counts; pass --counts-layer {found[0]} "
                    "(or --counts-layer X to use X as it is)")
            hint = "a layer name" + (f" (layers: {', '.join(adata.layers)})" if len(adata.layers) else "")
            hint += " or 'raw' (adata.raw is present)" if adata.raw is not None else ""
            warnings.warn(
                f"{path}: X has non-integer values (normalised?); stmm expects raw counts — pass --counts-layer "
                f"{hint} if raw counts are stored elsewhere",
                stacklevel=3,
            )
        return m
    if counts_layer in adata.layers:
        return _to_csr(adata.layers[counts_layer], f"{path}: layers[{counts_layer!r}]")
    if counts_layer == "raw" and adata.raw is not None:
        raw = adata.raw
        missing = adata.var_names.difference(raw.var_names)
        if len(missing):
            raise DataError(f"{path}: adata.raw lacks {len(missing)} genes of var_names (e.g. {missing[0]!r})")
        cols = raw.var_names.get_indexer(adata.var_names)
        return _to_csr(raw.X, f"{path}: raw.X")[:, cols]
    known = list(adata.layers) + (["raw"] if adata.raw is not None else []) + ["X"]
    raise DataError(
        f"{path}: --counts-layer {counts_layer!r} not found; available: {', '.join(known) or 'none (leave --counts-layer out to use X)'}"
    )


def _inline_spatial_uns(lib: str, info: SpatialInfo | None, image_path: str | None = None) -> dict[str, Any]:
    """``uns["spatial"][lib]`` in the scanpy convention for a built AnnData."""
    entry: dict[str, Any] = {"images": {}, "scalefactors": {}, "metadata": {}}
    if info is None:
        return entry
    entry["scalefactors"] = dict(info.scalefactors)
    if info.spot_diameter is not None:
        entry["scalefactors"]["spot_diameter_fullres"] = float(info.spot_diameter)
    entry["images"] = dict(info.images_inline)
    img = info.image
    if img is not None and not entry["images"]:
        key = info.image_key if info.image_key in ("hires", "lowres") else "hires"
        if max(img.height, img.width) <= _MAX_INLINE_IMAGE_SIDE:
            entry["images"][key] = img.to_array()
            entry["scalefactors"][f"tissue_{key}_scalef"] = float(info.scale)
    if img is not None:
        entry["metadata"]["stmm_image_scale"] = float(info.scale)
        if image_path is not None:
            entry["metadata"]["stmm_image_path"] = image_path
    return entry


def _build_adata(counts: Any, obs: "pd.DataFrame", var: "pd.DataFrame", coords: np.ndarray, lib: str,
                 info: SpatialInfo | None, image_path: str | None) -> "anndata.AnnData":
    import anndata

    adata = anndata.AnnData(X=counts, obs=obs, var=var)
    adata.obsm["spatial"] = np.asarray(coords, dtype=np.float64)
    adata.uns["spatial"] = {lib: _inline_spatial_uns(lib, info, image_path)}
    return adata


# ------------------------------------------------------------------------------------- Space Ranger
def read_spaceranger_spatial(folder: str | Path, *, hires: bool = True, scale_given: bool = False) -> SpatialInfo:
    """Read a Space Ranger ``spatial/`` folder: positions, scale factors and the hires (else lowres) image.

    ``scale_given``: the caller has its own scale factor (``--scale``), so an unreadable ``scalefactors_json.json``
    is a warning (its values are left out), not an error.

    Positions come from ``tissue_positions.parquet``/``.csv`` (header: columns read by name),
    ``tissue_positions_list.csv`` or ``.txt`` (no header); x = ``pxl_col_in_fullres``, y = ``pxl_row_in_fullres``
    (:mod:`stmm_core.data.positions`).
    """
    from stmm_core.data.positions import find_positions, read_positions

    folder = _exists(Path(folder), "Space Ranger spatial folder")
    if (folder / "spatial").is_dir():
        folder = folder / "spatial"
    pos = read_positions(find_positions(folder))  # by column name when there is a header (Space Ranger ≥ 2)

    sf_path = folder / "scalefactors_json.json"
    scalefactors: dict[str, float] = {}
    if sf_path.exists():
        try:
            scalefactors = {k: float(v) for k, v in json.loads(sf_path.read_text()).items()}
        except (ValueError, TypeError) as exc:
            if not scale_given:
                raise DataError(f"cannot read {sf_path}: {exc}; fix the file, or pass --scale S (full-resolution px → "
                                "image px) to use the image without it") from None
            warnings.warn(f"cannot read {sf_path} ({exc}); its scale factors are left out (--scale is given)",
                          stacklevel=2)
    info = SpatialInfo(positions=pos, scalefactors=scalefactors,
                       spot_diameter=scalefactors.get("spot_diameter_fullres"))
    order = ("hires", "lowres") if hires else ("lowres", "hires")
    for key in order:
        img_path = folder / f"tissue_{key}_image.png"
        if not img_path.exists():
            continue
        scale = scalefactors.get(f"tissue_{key}_scalef")  # None: --scale must give it (checked when validated)
        info.image, info.scale, info.image_key = open_image(img_path), scale, key
        break
    for key in ("hires", "lowres"):  # small PNGs, stored inline as scanpy.read_visium does
        img_path = folder / f"tissue_{key}_image.png"
        if img_path.exists() and f"tissue_{key}_scalef" in scalefactors:
            src = info.image if info.image_key == key else open_image(img_path)
            info.images_inline[key] = src.to_array()
    return info


def read_10x_h5(path: str | Path) -> tuple[Any, "pd.Index", "pd.DataFrame"]:
    """Read a Cell/Space Ranger ``filtered_feature_bc_matrix.h5`` with h5py (v3 and legacy v2 layouts).

    Returns ``(counts CSR float32 (barcodes × features), barcodes, var)``; ``var`` is indexed by feature id
    (Ensembl) with columns ``gene_ids``, ``symbol``, ``feature_types``. Only "Gene Expression" features
    are kept when other feature types (antibodies…) are present.
    """
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    path = _exists(Path(path), "10x matrix file")

    def _str(a: Any) -> np.ndarray:
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in a[:]], dtype=object)

    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f:
                g = f["matrix"]
                feat = g["features"]
                ids, names = _str(feat["id"]), _str(feat["name"])
                ftype = _str(feat["feature_type"]) if "feature_type" in feat else np.full(len(ids), "Gene Expression")
            else:  # legacy v2: one group per genome
                groups = [k for k in f if isinstance(f[k], h5py.Group)]
                if not groups:
                    raise KeyError("no 'matrix' group")
                g = f[groups[0]]
                ids, names = _str(g["genes"]), _str(g["gene_names"])
                ftype = np.full(len(ids), "Gene Expression", dtype=object)
            shape = tuple(int(s) for s in g["shape"][:])
            m = sp.csc_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape)
            barcodes = _str(g["barcodes"])
    except DataError:
        raise
    except (OSError, KeyError) as exc:
        raise DataError(f"{path} is not a 10x feature-barcode matrix .h5 ({exc})") from None
    counts = _to_csr(m.T, f"{path}: matrix")
    keep = ftype == "Gene Expression"
    if keep.any() and not keep.all():
        counts = counts[:, np.flatnonzero(keep)]
        ids, names, ftype = ids[keep], names[keep], ftype[keep]
    var = pd.DataFrame({"gene_ids": ids, "symbol": names, "feature_types": ftype}, index=pd.Index(ids))
    return counts, pd.Index(barcodes, name="barcode"), var


def _find_matrix_h5(folder: Path) -> Path:
    for base in (folder, folder / "outs"):
        exact = base / "filtered_feature_bc_matrix.h5"
        if exact.exists():
            return exact
        hits = sorted(base.glob("*filtered_feature_bc_matrix.h5")) if base.is_dir() else []
        if len(hits) == 1:
            return hits[0]
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise DataError(
        f"{folder} is not a Space Ranger output folder: no filtered_feature_bc_matrix.h5 (found: {found}); "
        "give a .h5ad file, a Space Ranger folder, or a counts table with --coords (Python: coords=)"
    )


# ---------------------------------------------------------------------------------------- tables
def read_coords_table(path: str | Path) -> "pd.DataFrame":
    """Read spot coordinates: a table with an id column and x, y in full-res px → DataFrame(x, y) by id.

    Accepted columns: id = ``id``/``barcode``/``spot``/``spot_id`` (else the first text column); x, y =
    ``x, y`` or ``pixel_x, pixel_y`` or ``pxl_col_in_fullres, pxl_row_in_fullres``. A legacy-ST spot file
    (array ``x, y`` + ``pixel_x, pixel_y``, no id) gets ids ``"{x}x{y}"`` as in the ST count tables.
    """
    import pandas as pd

    path = _exists(Path(path), "coordinates file")
    if path.is_dir():
        return read_spaceranger_spatial(path).positions
    try:
        df = pd.read_csv(path, sep=None, engine="python")
    except Exception as exc:
        raise DataError(f"cannot read coordinates table {path}: {exc}") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "pixel_x" in cols and "pixel_y" in cols:
        xc, yc = cols["pixel_x"], cols["pixel_y"]
    elif "pxl_col_in_fullres" in cols and "pxl_row_in_fullres" in cols:
        xc, yc = cols["pxl_col_in_fullres"], cols["pxl_row_in_fullres"]
    elif "x" in cols and "y" in cols:
        xc, yc = cols["x"], cols["y"]
    else:
        raise DataError(
            f"{path}: no coordinate columns; expected columns id, x, y (full-resolution pixels), found "
            f"{', '.join(map(str, df.columns[:10]))}"
        )
    idc = next((cols[k] for k in ("id", "barcode", "spot", "spot_id", "row.names", "unnamed: 0") if k in cols), None)
    if idc is None:
        text = [c for c in df.columns if df[c].dtype == object]
        idc = text[0] if text else None
    if idc is not None:
        ids = df[idc].astype(str)
    elif xc != cols.get("x") and "x" in cols and "y" in cols:  # legacy ST spot file
        ids = df[cols["x"]].round().astype(int).astype(str) + "x" + df[cols["y"]].round().astype(int).astype(str)
    else:
        raise DataError(f"{path}: no spot id column; add a first column 'id' with the spot ids of the counts")
    try:
        xy = df[[xc, yc]].astype(float).to_numpy()
    except ValueError as exc:
        raise DataError(f"{path}: coordinate columns are not numeric ({exc})") from None
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}, index=pd.Index(ids.to_numpy(), name="id"))


def read_counts_table(path: str | Path) -> tuple[Any, "pd.Index", "pd.Index"]:
    """Read a spots × genes counts table (first column = spot ids) → (CSR float32, spot ids, genes)."""
    import pandas as pd

    path = _exists(Path(path), "counts table")
    try:
        df = pd.read_csv(path, sep=_table_sep(path), index_col=0)
    except Exception as exc:
        raise DataError(f"cannot read counts table {path}: {exc}") from None
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(
            f"{path}: {len(bad)} non-numeric column(s) (e.g. {bad[0]!r}); a counts table must be spots × genes "
            "numbers with the spot ids in the first column"
        )
    return _to_csr(df.to_numpy(dtype=np.float32), str(path)), df.index.astype(str), df.columns.astype(str)


# ----------------------------------------------------------------------------------------- h5ad
def _read_h5ad(path: Path) -> "anndata.AnnData":
    import anndata
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f and "X" not in f:
                raise DataError(f"{path} is a 10x matrix .h5, not an AnnData; rename it to .h5 or pass its folder")
            if "obs" not in f and "X" not in f:
                raise DataError(f"cannot read {path} as AnnData: no 'obs' or 'X' inside; is it an .h5ad written "
                                "by anndata/scanpy?")
    except OSError:
        raise DataError(f"cannot read {path}: not an HDF5/.h5ad file (corrupt, truncated or another format)") from None
    try:
        with warnings.catch_warnings():  # duplicate names are reported by validate_section, with a fix
            warnings.filterwarnings("ignore", message=".* names are not unique")
            return anndata.read_h5ad(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as AnnData ({type(exc).__name__}: {exc}); is it an .h5ad?") from None


def _spatial_from_adata(adata: "anndata.AnnData", path: Path, library_id: str | None,
                        user_image: bool = False) -> tuple[str, SpatialInfo | None]:
    """Image/scale information stored in an h5ad (scanpy or HER2ST convention).

    ``user_image``: the caller gives an image or a scale factor (``--image``/``--scale``), so a stored image
    without scale factor, or one that cannot be found, is left to that (not an error here)."""
    import pandas as pd

    pos = pd.DataFrame(index=adata.obs_names)
    spatial = adata.uns.get("spatial")
    if isinstance(spatial, dict) and spatial:
        libs = [str(k) for k in spatial]
        if library_id is None:
            if len(libs) > 1:
                raise DataError(f"{path}: uns['spatial'] holds several libraries ({', '.join(libs)}); keep the one "
                                "to analyse in uns['spatial'] (Python: library_id=)")
            library_id = libs[0]
        if library_id not in spatial:
            raise DataError(f"{path}: library_id {library_id!r} not in uns['spatial'] (has: {', '.join(libs)})")
        lib = spatial[library_id]
        sf = {k: float(v) for k, v in dict(lib.get("scalefactors", {})).items() if np.isscalar(v)}
        info = SpatialInfo(positions=pos, scalefactors=sf, spot_diameter=sf.get("spot_diameter_fullres"))
        images = dict(lib.get("images", {}))
        meta = dict(lib.get("metadata", {}))
        for key in ("hires", "lowres"):
            if key in images:
                scale = sf.get(f"tissue_{key}_scalef")
                if scale is None and not user_image:
                    raise DataError(
                        f"{path}: uns['spatial'][{library_id!r}] has a {key} image but no 'tissue_{key}_scalef' "
                        f"in scalefactors; pass --scale S (full-resolution px → {key}-image px)"
                    )
                info.image = ArrayImage(images[key], name=f"{library_id}/{key}")
                info.scale, info.image_key = scale, key
                break
        else:
            if "stmm_image_path" in meta:  # written by stmm for a large image kept as a file
                info.image = open_image(meta["stmm_image_path"])
                info.scale, info.image_key = float(meta["stmm_image_scale"]), "file"
        return str(library_id), info
    img = adata.uns.get("image")
    name = library_id or path.stem
    if isinstance(img, dict) and ("path_relative_to_her2st_dir" in img or "path" in img):
        rel = str(img.get("path_relative_to_her2st_dir", img.get("path")))
        cands = [path.parent.parent / rel, path.parent / rel, Path(rel)]
        found = next((c for c in cands if c.exists()), None)
        if found is None:
            if user_image:
                return name, SpatialInfo(positions=pos)
            raise DataError(
                f"{path}: uns['image'] refers to {rel!r}, not found beside the h5ad ({cands[0]}); put the image "
                "there, or pass --image FILE --scale S, or use a recipe without an image (e.g. stereomm-expression)"
            )
        scale = img.get("scale_fullres_to_image", img.get("scale"))
        if scale is None and not user_image:
            raise DataError(f"{path}: uns['image'] has no 'scale_fullres_to_image'; pass --scale S "
                            "(full-resolution px → image px)")
        return name, SpatialInfo(positions=pos, image=open_image(found),
                                 scale=None if scale is None else float(scale), image_key="file")
    return name, None


# ------------------------------------------------------------------------------------------- join
def _join_positions(ids: "pd.Index", positions: "pd.DataFrame", where: str) -> np.ndarray:
    """(x, y) for *ids* from *positions* (joined by id); every id must have a position."""
    if positions.index.has_duplicates:
        dup = positions.index[positions.index.duplicated()]
        raise DataError(f"{where}: {len(dup)} duplicate spot ids in the coordinates (e.g. {dup[0]!r})")
    idx = positions.index.get_indexer(ids)
    missing = np.flatnonzero(idx < 0)
    if len(missing):
        hint = ""
        if len(missing) == len(ids):
            hint = f" (counts ids look like {ids[0]!r}, coordinate ids like {positions.index[0]!r})"
        raise DataError(
            f"{where}: {len(missing)} of {len(ids)} spots have no coordinates (e.g. {ids[missing[0]]!r}){hint}; "
            "spots are joined by id, so the ids must match"
        )
    return positions[["x", "y"]].to_numpy(dtype=np.float64)[idx]


def _coords_info(coords: Any, scale_given: bool = False) -> SpatialInfo:
    import pandas as pd

    if isinstance(coords, pd.DataFrame):
        if not {"x", "y"} <= set(coords.columns):
            raise DataError("coords DataFrame needs columns 'x' and 'y' (full-res px), indexed by spot id")
        df = coords.copy()
        df.index = df.index.astype(str)
        return SpatialInfo(positions=df)
    p = Path(coords)
    if p.is_dir():
        return read_spaceranger_spatial(p, scale_given=scale_given)
    return SpatialInfo(positions=read_coords_table(p))


#: ``STMM_COUNTS_LAYER=NAME`` (set by ``stmm benchmark --counts-layer``): the default ``counts_layer`` of
#: :func:`read_section` for this command and the processes it starts.
COUNTS_LAYER_ENV = "STMM_COUNTS_LAYER"

#: ``STMM_UNIQUE_IDS=1`` (set by ``--unique-ids``): readers make repeated spot ids and gene names unique instead of
#: refusing them.
UNIQUE_IDS_ENV = "STMM_UNIQUE_IDS"


def _wants_unique(wanted: bool | None) -> bool:
    if wanted is None:
        return os.environ.get(UNIQUE_IDS_ENV, "").strip().lower() in ("1", "true", "yes")
    return bool(wanted)


def _made_unique(index: "pd.Index", dup: "pd.Index", where: Path, what: str) -> "pd.Index":
    """*index* with ``-1``, ``-2``, … appended to its repeats (anndata's ``make_index_unique``), and one warning."""
    from anndata.utils import make_index_unique

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's note on suffix collisions: they are resolved all the same
        out = make_index_unique(index.copy(), join="-")
    first = int(np.flatnonzero(index.duplicated())[0])
    warnings.warn(f"{where}: {len(dup) - dup.nunique()} repeated {what} made unique (--unique-ids), e.g. "
                  f"{index[first]!r} -> {out[first]!r}", stacklevel=4)
    return out


def _unique_genes(genes: "pd.Index", where: Path, *, wanted: bool | None) -> "pd.Index":
    """Gene names with repeats made unique (``--unique-ids``; anndata's ``var_names_make_unique``), or one
    :class:`DataError` saying how to fix them. Repeats are kept as separate genes (``A``, ``A-1``), not summed."""
    dup = genes[genes.duplicated(keep=False)]
    what = f"{where}: {dup.nunique()} duplicate gene names ({len(dup)} entries, e.g. {dup[0]!r})"
    if not _wants_unique(wanted):
        raise DataError(f"{what}; gene names must be unique: pass --unique-ids to append -1, -2, … to the repeats "
                        "(Python: unique_ids=True; anndata's var_names_make_unique), or use Ensembl ids")
    return _made_unique(genes, dup, where, "gene names")


def _unique_ids(ids: "pd.Index", where: Path, *, joined: bool, wanted: bool | None) -> "pd.Index":
    """*ids* with repeats made unique (``--unique-ids``), or one :class:`DataError` saying how to fix them."""
    dup = ids[ids.duplicated(keep=False)]
    what = f"{where}: {dup.nunique()} duplicate spot ids ({len(dup)} entries, e.g. {dup[0]!r})"
    if joined:  # each id was looked up in a positions table: a repeated id got the first match's position
        raise DataError(f"{what}; spots are joined to their positions by id, so the ids must be unique in the counts "
                        "file (fix them there: --unique-ids cannot tell which position belongs to which repeat)")
    if not _wants_unique(wanted):
        raise DataError(f"{what}; spot ids must be unique: pass --unique-ids to append -1, -2, … to the repeats "
                        "(Python: unique_ids=True), or prefix them with the sample in the file")
    return _made_unique(ids, dup, where, "spot ids")


# ------------------------------------------------------------------------------------------- main
@dataclass
class _Loaded:
    """What a format loader returns before the common image/scale handling."""

    name: str
    counts: Any
    ids: "pd.Index"
    obs: "pd.DataFrame"
    var: "pd.DataFrame"
    xy: np.ndarray
    info: SpatialInfo | None
    adata: "anndata.AnnData | None" = None  # None: build one (non-h5ad formats)


def _load_spaceranger(p: Path, coords: Any, library_id: str | None, scale_given: bool = False) -> _Loaded:
    h5 = _find_matrix_h5(p) if p.is_dir() else p
    counts, ids, var = read_10x_h5(h5)
    if coords is None:
        coords = h5.parent / "spatial"
        if not coords.is_dir():
            raise DataError(f"{h5}: no 'spatial/' folder beside the matrix; pass --coords <spatial folder or table> "
                            "(Python: coords=)")
    info = _coords_info(coords, scale_given)
    xy = _join_positions(ids, info.positions, str(p))
    obs = info.positions.reindex(ids).drop(columns=["x", "y"])
    return _Loaded(library_id or (p.name if p.is_dir() else h5.parent.name), counts, ids, obs, var, xy, info)


def _load_table(p: Path, coords: Any, library_id: str | None) -> _Loaded:
    import pandas as pd

    if coords is None:
        raise DataError(f"{p} is a counts table: pass --coords <table with columns id, x, y in full-res px> "
                        "(Python: coords=)")
    counts, ids, genes = read_counts_table(p)
    info = _coords_info(coords)
    xy = _join_positions(ids, info.positions, str(p))
    return _Loaded(library_id or p.name.split(".")[0], counts, ids, pd.DataFrame(index=ids),
                   pd.DataFrame(index=genes), xy, info)


def _load_h5ad(p: Path, coords: Any, library_id: str | None, counts_layer: str | None,
               user_image: bool = False) -> _Loaded:
    adata = _read_h5ad(p)
    name, info = _spatial_from_adata(adata, p, library_id, user_image)
    if coords is not None:  # positions (and the folder's image, if any) replace the stored ones
        cinfo = _coords_info(coords)
        adata.obsm["spatial"] = _join_positions(adata.obs_names.astype(str), cinfo.positions, str(p))
        if cinfo.image is not None or info is None:
            info = cinfo
            adata.uns["spatial"] = {name: _inline_spatial_uns(name, cinfo)}
    elif "spatial" not in adata.obsm:
        raise DataError(
            f"{p}: no obsm['spatial'] (spot coordinates); store (x, y) full-res pixels there or pass "
            f"--coords <table with id, x, y> (Python: coords=; obsm keys: {', '.join(adata.obsm.keys()) or 'none'})"
        )
    xy = np.asarray(adata.obsm["spatial"])
    if not np.issubdtype(xy.dtype, np.number):
        raise DataError(f"{p}: obsm['spatial'] is not numeric ({xy.dtype}); store (x, y) full-res pixels")
    counts = _counts_from_adata(adata, counts_layer, p)
    return _Loaded(name, counts, adata.obs_names, adata.obs, adata.var, xy.astype(np.float64), info, adata)


def read_section(
    path: str | Path,
    *,
    coords: Any = None,
    image: Any = None,
    scale: float | None = None,
    spot_diameter: float | None = None,
    library_id: str | None = None,
    counts_layer: str | None = None,
    validate: bool = True,
    bin_size: float | None = None,
    region: Any = None,
    unique_ids: bool | None = None,
) -> Section:
    """Read a section from an ``.h5ad``, a Space Ranger folder/``.h5``, or a counts table + ``coords=``.

    Args:
        path: the counts (see module docstring for formats).
        coords: spot positions joined **by spot id**: a table (id, x, y in full-res px), a Space Ranger
            ``spatial/`` folder, or a DataFrame with columns x, y. Required for counts tables; optional
            for other formats (overrides their positions, and their image if the folder has one).
        image: an image file / array / :class:`ImageSource` overriding any stored image (needs ``scale``),
            or ``False`` to ignore stored images (expression-only).
        scale: full-res px → image px factor for ``image`` (or to override the stored one).
        spot_diameter: spot diameter in full-res px (overrides the stored value).
        library_id: which ``uns["spatial"]`` library to use when there are several.
        counts_layer: use ``layers[counts_layer]`` (or ``"raw"`` for ``adata.raw``) instead of ``X``; default:
            ``$STMM_COUNTS_LAYER`` (``stmm benchmark --counts-layer``), else ``X``.
        validate: run :func:`~stmm_core.data.validate.validate_section` before returning.
        bin_size: Stereo-seq GEM input (``.gem``/``.gem.gz``): bin side in DNB (default 50, i.e. bin50);
            Visium HD (a Space Ranger 3 folder with ``binned_outputs/``): bin side in µm, 2, 8 or 16 (default 8).
        region: Visium HD only: ``(x0, y0, x1, y1)`` or ``"x0,y0,x1,y1"`` in full-resolution px; only bins inside
            are read (the way to fit 2 µm bins, see :mod:`stmm_core.data.visium_hd`).
        unique_ids: make repeated spot ids and gene names unique (``-1``, ``-2``, … appended to the repeats, as
            anndata's ``obs_names_make_unique`` / ``var_names_make_unique``) instead of refusing them; default:
            ``$STMM_UNIQUE_IDS`` (``--unique-ids``).
            Not for ids joined to positions by id (a counts table, ``coords=``): those must be unique in the file.

    Returns:
        A :class:`Section` whose ``adata`` carries ``obsm["spatial"]`` and ``uns["spatial"]``.
    """
    import pandas as pd

    from stmm_core.data.spatialdata_io import is_spatialdata
    from stmm_core.data.visium_hd import is_visium_hd

    p = _exists(Path(path).expanduser(), "data path")
    if counts_layer is None:  # `stmm benchmark --counts-layer` sets it for every dataset the command reads
        counts_layer = os.environ.get(COUNTS_LAYER_ENV) or None
    if region is not None and not is_visium_hd(p):
        raise DataError(f"--region applies to Visium HD folders (binned_outputs/); {p} is not one")
    if bin_size is not None and not (p.name.lower().endswith((".gem", ".gem.gz")) or is_visium_hd(p)):
        raise DataError(f"--bin-size applies to Visium HD folders (binned_outputs/) and Stereo-seq .gem files; {p} is "
                        "neither, so its spots are used as they are: leave --bin-size out")
    if p.name.lower().endswith((".gem", ".gem.gz")):  # Stereo-seq DNB-level expression, binned here
        from stmm_core.data.stereo import read_gem

        adata = read_gem(p, bin_size=bin_size or 50)
        ld = _Loaded(library_id or p.name.split(".")[0], _to_csr(adata.X, str(p)), adata.obs_names, adata.obs,
                     adata.var, np.asarray(adata.obsm["spatial"], dtype=np.float64), None, adata)
        if spot_diameter is None:
            spot_diameter = float(bin_size or 50)
    elif is_spatialdata(p):  # a SpatialData zarr store: table + shapes (+ image) in 'global'
        from stmm_core.data.spatialdata_io import loaded_spatialdata

        ld = loaded_spatialdata(p, library_id, counts_layer)
    elif p.is_dir() and is_visium_hd(p):  # Space Ranger 3 binned_outputs/: one bin size
        from stmm_core.data.visium_hd import loaded_visium_hd

        ld = loaded_visium_hd(p, library_id, bin_size, region)
        if image is not None and image is not False and scale is None:
            scale = 1.0  # HD positions are full-resolution px of the microscope image itself
    elif p.is_dir() or p.suffix.lower() == ".h5":
        ld = _load_spaceranger(p, coords, library_id, scale_given=scale is not None)
    elif _is_table(p):
        ld = _load_table(p, coords, library_id)
    elif p.suffix.lower() == ".h5ad":
        ld = _load_h5ad(p, coords, library_id, counts_layer, user_image=image is not None or scale is not None)
    else:
        raise DataError(
            f"{p}: unsupported data format {p.suffix!r}; give a .h5ad, a Space Ranger folder or .h5, or a "
            "counts table (.csv/.tsv[.gz]) with --coords, a Visium HD outs/ folder or a SpatialData .zarr"
        )
    info = ld.info or SpatialInfo(positions=pd.DataFrame())
    img_src, img_scale, image_key = info.image, info.scale, info.image_key
    if image is False:
        img_src = img_scale = image_key = None
    elif image is not None:
        if scale is None:
            raise DataError("--image needs --scale S too (full-resolution px → image px)")
        img_src, image_key = as_image_source(image, name="image"), "user"
    if scale is not None and image is not False:
        if img_src is None:
            raise DataError("--scale was given but there is no image; pass --image FILE as well")
        img_scale = float(scale)
    if img_src is not None and img_scale is None:
        kind = f"{image_key} " if image_key in ("hires", "lowres") else ""
        raise DataError(f"{p}: the {kind}image has no scale factor; pass --scale S (full-resolution px → {kind}image "
                        "px)")
    diameter = float(spot_diameter) if spot_diameter is not None else info.spot_diameter

    obs_names = pd.Index(np.asarray(ld.ids, dtype=object).astype(str))
    adata = ld.adata
    if obs_names.has_duplicates:
        obs_names = _unique_ids(obs_names, p, joined=coords is not None or adata is None, wanted=unique_ids)
        if adata is not None:
            adata.obs_names = obs_names
    obs = ld.obs.copy()
    obs.index = obs_names
    var = ld.var
    genes = pd.Index(var.index.astype(str))
    if genes.has_duplicates:
        genes = _unique_genes(genes, p, wanted=unique_ids)
        var = var.copy()
        var.index = genes
        if adata is not None:
            adata.var_names = genes
    if adata is None:
        var = var.copy()
        var.index = var.index.astype(str)
        built = info
        if image is not None or scale is not None:  # the user's image (or none) replaces the stored one
            built = SpatialInfo(positions=info.positions, image=img_src, scale=img_scale, spot_diameter=diameter,
                                image_key="hires")
        img_path = str(Path(image).resolve()) if isinstance(image, (str, Path)) else None
        adata = _build_adata(ld.counts, obs, var, ld.xy, ld.name, built, img_path)
    section = Section(
        name=str(ld.name),
        obs_names=obs_names,
        counts=ld.counts,
        gene_names=pd.Index(var.index.astype(str)),
        coords=np.asarray(ld.xy, dtype=np.float64),
        image=img_src,
        image_scale=None if img_scale is None else float(img_scale),
        spot_diameter=None if diameter is None else float(diameter),
        obs=obs,
        gene_symbols=_gene_symbols(var),
        adata=adata,
        meta={"source": str(p), "scalefactors": dict(info.scalefactors), "image_key": image_key},
    )
    if validate:
        from stmm_core.data.validate import validate_section

        validate_section(section)
    return section
