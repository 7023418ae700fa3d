"""Checks on a :class:`Section` with one clear :class:`DataError` per problem, and spot/gene filtering."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stmm_core.data.section import Section
from stmm_core.errors import DataError

#: A spot centre may lie this many image pixels outside the image before it counts as outside.
EDGE_TOLERANCE_PX = 1.0


def _n(count: int, noun: str) -> str:
    """``"1 spot has"`` / ``"3 spots have"``."""
    return f"{count} {noun} has" if count == 1 else f"{count} {noun}s have"


def _example(index: "object", mask: np.ndarray) -> str:
    return repr(str(np.asarray(index, dtype=object)[np.flatnonzero(mask)[0]]))


def _duplicates(names: "object", what: str, where: str, fix: str) -> None:
    import pandas as pd

    idx = pd.Index(names)
    if idx.has_duplicates:
        dup = idx.duplicated(keep=False)
        n_names = int(idx[dup].nunique())
        raise DataError(
            f"{where}: {n_names} duplicate {what} ({int(dup.sum())} entries, e.g. {_example(idx, dup)}); {fix}"
        )


def _fits(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    t = EDGE_TOLERANCE_PX
    return (xy[:, 0] >= -t) & (xy[:, 0] < width + t) & (xy[:, 1] >= -t) & (xy[:, 1] < height + t)


def _check_inside_image(section: Section, where: str) -> None:
    img, s = section.image, float(section.image_scale)
    w, h = img.width, img.height
    c = section.coords
    inside = _fits(c * s, w, h)
    if inside.all():
        return
    sx, sy = c[:, 0] * s, c[:, 1] * s
    msg = (
        f"{where}: {int((~inside).sum())} of {len(c)} spots fall outside the {w}×{h} px image after scaling "
        f"full-res coordinates by {s:g} (scaled x {sx.min():.0f}–{sx.max():.0f}, y {sy.min():.0f}–{sy.max():.0f}; "
        f"full-res x {c[:, 0].min():.0f}–{c[:, 0].max():.0f}, y {c[:, 1].min():.0f}–{c[:, 1].max():.0f})."
    )
    hints = []
    cands = [(float(v), f"With {k}={float(v):g} every spot fits, so the image is probably the "
                        f"{k.replace('tissue_', '').replace('_scalef', '')} image: pass --scale {float(v):g}")
             for k, v in section.meta.get("scalefactors", {}).items() if k.endswith("_scalef")]
    cands.append((1.0, "With scale 1 every spot fits: the coordinates are probably already in image pixels; "
                       "pass --scale 1"))
    for alt, hint in cands:
        if abs(alt - s) > 1e-9 * max(abs(s), 1.0) and _fits(c * alt, w, h).all():
            hints.append(hint)
            break
    if not hints and _fits(c[:, ::-1] * s, w, h).all():
        hints.append("With x and y swapped every spot fits: the coordinates are probably (y, x); store (x, y)")
    if not hints:
        hi = np.nanmax(c, axis=0)
        if np.all(hi > 0) and np.nanmin(c) >= 0:
            best = min(w / hi[0], h / hi[1])
            hints.append(f"All spots would fit with a scale up to ≈{best:.4g}; check the scale factor and that the "
                         "coordinates are full-resolution pixels of this image")
        else:
            hints.append("Some coordinates are negative; check the coordinate origin and the scale factor")
    raise DataError(msg + " " + hints[0])


def _check_not_one_pixel(section: Section, where: str) -> None:
    """Spots at distinct positions that all land within one image pixel: the scale factor is off by orders of
    magnitude (the image cannot tell any two spots apart, and the fit would rest on expression alone)."""
    c, s = np.asarray(section.coords, dtype=float), float(section.image_scale)
    span = float(np.ptp(c, axis=0).max()) if len(c) > 1 else 0.0
    if span <= 0 or span * s >= 1.0:
        return
    img = section.image
    fits = [f"{k}={float(v):g}" for k, v in section.meta.get("scalefactors", {}).items()
            if k.endswith("_scalef") and span * float(v) >= 1.0 and _fits(c * float(v), img.width, img.height).all()]
    hint = f" (with {fits[0]} they fit the image: pass --scale {fits[0].split('=')[1]})" if fits else ""
    raise DataError(f"{where}: after scaling full-res coordinates by {s:g}, all {len(c)} spots lie within "
                    f"{span * s:.2g} px of the {img.width}×{img.height} px image, so its pixels cannot tell them apart; "
                    f"the scale factor is wrong{hint}: --scale is image px per full-resolution px (1 for the "
                    "full-resolution image)")


def validate_section(section: Section, *, need_image: bool = False) -> Section:
    """Check a section and return it (counts converted to CSR float32 if needed).

    Raises :class:`DataError` (one message naming the problem and the fix) for: an empty matrix,
    missing or misshapen coordinates, NaN/inf coordinates, duplicate spot ids or gene names, NaN/inf or
    negative counts, an image without a (positive) scale factor, spots outside the image, and — with
    ``need_image`` — a missing image.
    """
    import scipy.sparse as sp

    if not isinstance(section, Section):
        raise DataError(f"expected a stmm Section, got {type(section).__name__}; read data with read_section()")
    where = f"section {section.name!r}"
    counts = section.counts
    if counts is None or not hasattr(counts, "shape") or len(counts.shape) != 2:
        raise DataError(f"{where}: no counts matrix")
    if not (sp.isspmatrix_csr(counts) and counts.dtype == np.float32):
        counts = sp.csr_matrix(counts, dtype=np.float32)
        section = replace(section, counts=counts)
    n, g = counts.shape
    if n == 0 or g == 0:
        raise DataError(f"{where}: empty count matrix ({n} spots × {g} genes); the file holds no data")
    if len(section.obs_names) != n or len(section.gene_names) != g:
        raise DataError(
            f"{where}: counts are {n}×{g} but there are {len(section.obs_names)} spot ids and "
            f"{len(section.gene_names)} gene names"
        )
    if section.coords is None:
        raise DataError(f"{where}: no spatial coordinates (obsm['spatial']); pass --coords <table with id, x, y>")
    coords = np.asarray(section.coords)
    if coords.ndim != 2 or coords.shape != (n, 2):
        raise DataError(
            f"{where}: spatial coordinates have shape {tuple(coords.shape)}; expected ({n}, 2) = (x, y) in "
            "full-resolution pixels, one row per spot (obsm['spatial'])"
        )
    if not np.issubdtype(coords.dtype, np.number):
        raise DataError(f"{where}: spatial coordinates are not numeric ({coords.dtype})")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: {_n(int(bad.sum()), 'spot')} NaN/inf coordinates (e.g. {_example(section.obs_names, bad)}); "
            "remove those spots or fix obsm['spatial']"
        )
    _duplicates(section.obs_names, "spot ids", where, "spot ids must be unique (prefix them with the sample, or "
                "read the file with --unique-ids; Python: read_section(..., unique_ids=True))")
    _duplicates(section.gene_names, "gene names", where,
                "gene names must be unique: read the file with --unique-ids (Python: read_section(..., "
                "unique_ids=True)), use Ensembl ids, or make them unique (var_names_make_unique)")
    data = counts.data
    bad_vals = ~np.isfinite(data) | (data < 0)
    if bad_vals.any():
        rows = np.unique(np.searchsorted(counts.indptr, np.flatnonzero(bad_vals), side="right") - 1)
        kind = "NaN/inf" if (~np.isfinite(data)).any() else "negative"
        raise DataError(
            f"{where}: {_n(len(rows), 'spot')} {kind} counts (e.g. {section.obs_names[rows[0]]!r}); stmm needs raw, "
            "non-negative counts — give the raw-count layer with --counts-layer rather than scaled/log data"
        )
    if section.image is not None:
        s = section.image_scale
        if s is None:
            raise DataError(f"{where}: image without scale factors: pass --scale S (full-resolution px → image px)")
        if not np.isfinite(s) or s <= 0:
            raise DataError(f"{where}: image scale factor {s!r} must be a positive number")
        _check_inside_image(section, where)
    elif need_image:
        raise DataError(
            f"{where}: this pipeline needs a histology image but the section has none; pass --image FILE and "
            "--scale S (full-res px → image px)"
        )
    if section.spot_diameter is not None and not (np.isfinite(section.spot_diameter) and section.spot_diameter > 0):
        raise DataError(f"{where}: spot diameter {section.spot_diameter!r} must be a positive number of full-res px")
    from stmm_core.data.sanity import check_coordinate_units

    check_coordinate_units(section, where)
    if section.image is not None:  # after the units check: positions that are not full-res px are said as such
        _check_not_one_pixel(section, where)
    return section


def filter_section(section: Section, min_counts: float = 1, drop_genes: bool = True) -> Section:
    """Drop spots with fewer than ``min_counts`` total counts, then (``drop_genes``) genes with zero counts.

    Evaluation and prediction pass ``drop_genes=False``: a gene never detected in a held-out section is a measured
    zero, not a missing gene, and a trained pipeline still needs it.

    Returns the same object when nothing is removed; ``meta["filtered"]`` records what was removed.
    """
    counts = section.counts
    totals = np.asarray(counts.sum(axis=1)).ravel()
    keep_spots = totals >= min_counts
    if not keep_spots.any():
        raise DataError(
            f"section {section.name!r}: zero spots after filtering: all {section.n_spots} spots have fewer than "
            f"{min_counts:g} total counts (max {totals.max() if totals.size else 0:g}); check that the matrix "
            "holds raw counts"
        )
    gene_totals = np.asarray(counts[keep_spots].sum(axis=0)).ravel()
    keep_genes = gene_totals > 0 if drop_genes else np.ones(gene_totals.shape, bool)
    if not keep_genes.any():
        raise DataError(f"section {section.name!r}: zero genes after filtering: no gene has a positive count")
    if keep_spots.all() and keep_genes.all():
        return section
    ks, kg = np.flatnonzero(keep_spots), np.flatnonzero(keep_genes)
    adata = section.adata[ks][:, kg].copy() if section.adata is not None else None
    meta = dict(section.meta)
    meta["filtered"] = {"spots_removed": int((~keep_spots).sum()), "genes_removed": int((~keep_genes).sum()),
                        "min_counts": min_counts}
    return replace(
        section,
        obs_names=section.obs_names[ks],
        counts=counts[ks][:, kg],
        gene_names=section.gene_names[kg],
        coords=np.asarray(section.coords)[ks],
        obs=section.obs.iloc[ks].copy() if section.obs is not None else None,
        gene_symbols=section.gene_symbols[kg] if section.gene_symbols is not None else None,
        adata=adata,
        meta=meta,
    )
