"""Visium HD: a Space Ranger 3 output folder, one bin size at a time.

Layout (Space Ranger 3.x ``outs/``)::

    binned_outputs/square_002um/ filtered_feature_bc_matrix.h5
                                  spatial/tissue_positions.parquet   barcode, in_tissue, array_row, array_col,
                                                                     pxl_row_in_fullres, pxl_col_in_fullres
                                  spatial/scalefactors_json.json     microns_per_pixel, bin_size_um,
                                                                     spot_diameter_fullres, tissue_{hires,lowres}_scalef …
                                  spatial/tissue_hires_image.png, tissue_lowres_image.png
    binned_outputs/square_008um/ …  binned_outputs/square_016um/ …

``read_section(path, bin_size=8)`` accepts ``outs/``, its parent, ``binned_outputs/`` or one ``square_XXXum``
folder. Positions are full-resolution pixels of the microscope image; give that image with ``--image`` (read
lazily, tile by tile; scale 1 unless ``--scale``). A whole section at 2 µm is ~11 million bins: it is refused
with its cost unless a region (``--region``) or a bin budget makes it fit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from stmm_core.errors import DataError

BIN_SIZES = (2, 8, 16)
DEFAULT_BIN_UM = 8
#: Bins above which a 2 µm request on a whole section is refused (an 8 µm whole capture area is ~660k bins).
MAX_WHOLE_SECTION_BINS = 1_500_000
_BIN_DIR = re.compile(r"^square_(\d{3})um$")
#: Peak memory of a full fit per bin: 3.73 GB for 595,784 bins (6.3 kB/bin, counts included) on the synthetic
#: 8 µm section, expression only (benchmarks/visium_hd_scale.py --step fit --epochs 5 --no-image).
FIT_BYTES_PER_BIN = 6_300


def bin_folder_name(bin_um: float) -> str:
    return f"square_{int(round(bin_um)):03d}um"


def hd_binned_root(path: Path) -> Path | None:
    """The ``binned_outputs`` folder for *path* (outs/, its parent, binned_outputs/ or a square_XXXum folder)."""
    if _BIN_DIR.match(path.name) and path.parent.name == "binned_outputs":
        return path.parent
    for cand in (path, path / "binned_outputs", path / "outs" / "binned_outputs"):
        if cand.name == "binned_outputs" and cand.is_dir():
            return cand
    return None


def is_visium_hd(path: Path) -> bool:
    return path.is_dir() and hd_binned_root(path) is not None


def resolve_bin_folder(path: Path, bin_size: float | None) -> tuple[Path, int]:
    """``(square_XXXum folder, bin µm)``; a folder given directly fixes the bin size."""
    root = hd_binned_root(path)
    assert root is not None
    available = sorted(int(m.group(1)) for p in root.iterdir() if (m := _BIN_DIR.match(p.name)) and p.is_dir())
    if _BIN_DIR.match(path.name):
        chosen = int(_BIN_DIR.match(path.name).group(1))
        if bin_size is not None and int(round(bin_size)) != chosen:
            raise DataError(f"{path} holds {chosen} µm bins but --bin-size {bin_size:g} was given; give the "
                            f"binned_outputs folder to choose, or drop --bin-size")
        return path, chosen
    want = int(round(bin_size if bin_size is not None else DEFAULT_BIN_UM))
    folder = root / bin_folder_name(want)
    if not folder.is_dir():
        have = ", ".join(f"{b}" for b in available) or "none"
        raise DataError(f"{root}: no {folder.name}/ (Visium HD bin sizes present: {have} µm); choose one with "
                        "--bin-size")
    return folder, want


def h5_size(h5: Path) -> tuple[int, int, int]:
    """``(n_features, n_barcodes, nnz)`` of a 10x matrix .h5 without reading it."""
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            g = f["matrix"]
            n_feat, n_bc = (int(s) for s in g["shape"][:])
            return n_feat, n_bc, int(g["data"].shape[0])
    except (OSError, KeyError) as exc:
        raise DataError(f"{h5} is not a 10x feature-barcode matrix .h5 ({exc})") from None


def cost_message(folder: Path, bin_um: int, n_bins: int, nnz: int) -> str:
    counts_gb = nnz * 8 / 1e9
    fit_gb = max(n_bins * FIT_BYTES_PER_BIN / 1e9, 2 * counts_gb)
    return (f"{folder}: {bin_um} µm bins over the whole section: {n_bins:,} bins, {nnz:,} non-zero counts — "
            f"about {counts_gb:.1f} GB for the counts alone and roughly {fit_gb:.0f} GB peak for a fit "
            f"(~{FIT_BYTES_PER_BIN / 1000:.1f} kB per bin measured at 8 µm without image features), hours on "
            "CPU. For a whole section use "
            f"--bin-size 8 (default) or 16; for {bin_um} µm fit a region: --region X0,Y0,X1,Y1 (full-resolution "
            f"px, at most {MAX_WHOLE_SECTION_BINS:,} bins)")


def parse_region(region: Any) -> tuple[float, float, float, float] | None:
    """``"x0,y0,x1,y1"`` or a 4-sequence → floats (full-resolution px), x0 < x1 and y0 < y1."""
    if region is None:
        return None
    parts = region.split(",") if isinstance(region, str) else list(region)
    try:
        x0, y0, x1, y1 = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise DataError(f"--region {region!r}: expected X0,Y0,X1,Y1 (four numbers, full-resolution px)") from None
    if not (x0 < x1 and y0 < y1):
        raise DataError(f"--region {region!r}: needs X0 < X1 and Y0 < Y1")
    return x0, y0, x1, y1


def read_h5_columns(h5: Path, keep: np.ndarray) -> tuple[Any, np.ndarray, Any]:
    """Counts of the barcodes at sorted column indices *keep* of a 10x v3 .h5, read run by run (the rest of the
    matrix is never loaded). Returns ``(CSR float32 (len(keep), G), barcodes (bytes), var DataFrame)``."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    with h5py.File(h5, "r") as f:
        g = f["matrix"]
        indptr = g["indptr"][:]
        n_feat = int(g["shape"][0])
        feat = g["features"]
        ids = np.array([v.decode() for v in feat["id"][:]], dtype=object)
        names = np.array([v.decode() for v in feat["name"][:]], dtype=object)
        ftype = (np.array([v.decode() for v in feat["feature_type"][:]], dtype=object) if "feature_type" in feat
                 else np.full(len(ids), "Gene Expression", dtype=object))
        barcodes = g["barcodes"][:][keep]
        breaks = np.flatnonzero(np.diff(keep) != 1) + 1
        data_parts, idx_parts = [], []
        for run in np.split(keep, breaks):
            if len(run) == 0:
                continue
            a, b = int(indptr[run[0]]), int(indptr[run[-1] + 1])
            data_parts.append(g["data"][a:b])
            idx_parts.append(g["indices"][a:b])
    lengths = indptr[keep + 1] - indptr[keep]
    new_ptr = np.concatenate([[0], np.cumsum(lengths)])
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, np.float32)
    indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    m = sp.csr_matrix((data.astype(np.float32), indices, new_ptr), shape=(len(keep), n_feat))
    gex = ftype == "Gene Expression"
    if gex.any() and not gex.all():
        m = m[:, np.flatnonzero(gex)]
        ids, names, ftype = ids[gex], names[gex], ftype[gex]
    var = pd.DataFrame({"gene_ids": ids, "symbol": names, "feature_types": ftype}, index=pd.Index(ids))
    return m, barcodes, var


def load_visium_hd(path: Path, bin_size: float | None, region: Any = None,
                   max_bins: int | None = None) -> dict[str, Any]:
    """Counts, positions and the spatial folder's images of one Visium HD bin size.

    Returns a dict with ``counts`` (CSR), ``ids`` (Index), ``var``, ``obs`` (positions columns), ``xy``,
    ``info`` (:class:`~stmm_core.data.readers.SpatialInfo`), ``name``, ``bin_um``, ``spatial_folder``.
    """
    import pandas as pd

    from stmm_core.data.readers import read_10x_h5, read_spaceranger_spatial

    max_bins = MAX_WHOLE_SECTION_BINS if max_bins is None else max_bins
    folder, bin_um = resolve_bin_folder(path, bin_size)
    h5 = folder / "filtered_feature_bc_matrix.h5"
    spatial = folder / "spatial"
    for need, what in ((h5, "filtered_feature_bc_matrix.h5"), (spatial / "tissue_positions.parquet",
                                                               "spatial/tissue_positions.parquet"),
                       (spatial / "scalefactors_json.json", "spatial/scalefactors_json.json")):
        if not need.exists():
            raise DataError(f"{folder}: no {what}; a Space Ranger 3 Visium HD bin folder holds "
                            "filtered_feature_bc_matrix.h5 and spatial/ (tissue_positions.parquet, "
                            "scalefactors_json.json); pass the whole outs/ folder as --data")
    sf = json.loads((spatial / "scalefactors_json.json").read_text())
    missing = [k for k in ("microns_per_pixel", "bin_size_um") if k not in sf]
    if missing:
        raise DataError(f"{spatial / 'scalefactors_json.json'}: no {', '.join(missing)}; a Visium HD scale-factor "
                        "file names the microns per full-resolution pixel and the bin size")
    if abs(float(sf["bin_size_um"]) - bin_um) > 1e-6:
        raise DataError(f"{spatial / 'scalefactors_json.json'}: bin_size_um {sf['bin_size_um']} but the folder is "
                        f"{folder.name}; the folder and its scale factors disagree")
    n_feat, n_bins, nnz = h5_size(h5)
    box = parse_region(region)
    if box is None and n_bins > max_bins:
        raise DataError(cost_message(folder, bin_um, n_bins, nnz))
    info = read_spaceranger_spatial(spatial)
    pos = info.positions
    if box is None:
        counts, ids, var = read_10x_h5(h5)
    else:
        import h5py

        with h5py.File(h5, "r") as f:
            all_bc = pd.Index(np.array([b.decode() for b in f["matrix"]["barcodes"][:]], dtype=object))
        inside = pos[(pos["x"] >= box[0]) & (pos["x"] < box[2]) & (pos["y"] >= box[1]) & (pos["y"] < box[3])]
        keep = np.sort(all_bc.get_indexer(inside.index))
        keep = keep[keep >= 0]
        if len(keep) == 0:
            raise DataError(f"--region {region}: no bins of {folder.name} inside (positions span x "
                            f"{pos['x'].min():.0f}–{pos['x'].max():.0f}, y {pos['y'].min():.0f}–{pos['y'].max():.0f} px)")
        if len(keep) > max_bins:
            raise DataError(cost_message(folder, bin_um, len(keep), int(nnz * len(keep) / max(n_bins, 1)))
                            .replace("over the whole section", "in --region"))
        counts, bc, var = read_h5_columns(h5, keep)
        ids = pd.Index([b.decode() for b in bc], name="barcode")
    if info.spot_diameter is None:
        info.spot_diameter = bin_um / float(sf["microns_per_pixel"])
    return {"folder": folder, "bin_um": bin_um, "counts": counts, "ids": ids, "var": var, "info": info,
            "microns_per_pixel": float(sf["microns_per_pixel"]), "n_bins_total": n_bins}


def loaded_visium_hd(path: Path, library_id: str | None, bin_size: float | None, region: Any) -> Any:
    """:func:`load_visium_hd` as the reader's common ``_Loaded`` record (positions joined by barcode)."""
    from stmm_core.data.readers import _join_positions, _Loaded

    hd = load_visium_hd(path, bin_size, region)
    info = hd["info"]
    ids = hd["ids"]
    xy = _join_positions(ids, info.positions, str(hd["folder"]))
    obs = info.positions.reindex(ids).drop(columns=["x", "y"])
    root = hd_binned_root(path)
    sample = root.parent.parent.name if root.parent.name == "outs" else root.parent.name
    info.scalefactors["microns_per_pixel"] = hd["microns_per_pixel"]
    info.scalefactors["bin_size_um"] = float(hd["bin_um"])
    name = library_id or f"{sample}_{hd['bin_um']:03d}um"
    return _Loaded(name, hd["counts"], ids, obs, hd["var"], xy, info)
