"""Plausibility checks a run cannot skip: coordinates in the wrong unit, normalised data given as counts.

Coordinates are stored in full-resolution pixels. The classic mistake is to store them in the pixels of the
hires or lowres image (scaled by ``tissue_*_scalef``, often 0.05–0.2): the spots then sit much closer together
than their own diameter, and in one corner of the image. :func:`check_coordinate_units` turns that into one
error naming the likely unit mix-up; :func:`counts_warning` says when the matrix holds non-integer values.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Iterator

import numpy as np

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section

#: Median nearest-neighbour distance below this fraction of the spot diameter: spots would overlap heavily,
#: which no array does (Visium ≈ 1.8 diameters apart, bins and beads ≈ 1).
MIN_SPACING_PER_DIAMETER = 0.5
#: All scaled spots inside this fraction of the image's width and height while the unscaled coordinates fit the
#: image: "every spot in one corner" (real sections reach 0.56–0.9 of the image; see the closing note).
CORNER_FRACTION = 0.35
MIN_SPOTS = 10


def median_nn_distance(xy: np.ndarray) -> float:
    """Median distance from each spot to its nearest other spot (k-d tree, O(N log N))."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def _unit_hint(section: "Section", ratio: float) -> str:
    """Which stored scale factor would explain the spacing (the coordinates were multiplied by it)."""
    best = None
    for k, v in (section.meta.get("scalefactors") or {}).items():
        if k.endswith("_scalef") and 0 < float(v) < 1:
            fixed = ratio / float(v)
            if 0.8 <= fixed <= 4 and (best is None or abs(np.log(fixed / 1.8)) < abs(np.log(best[2] / 1.8))):
                best = (k, float(v), fixed)
    if best:
        key = best[0].replace("tissue_", "").replace("_scalef", "")
        return (f"they look like {key}-image pixels ({best[0]}={best[1]:g}): divide them by {best[1]:g} to get "
                "full-resolution pixels")
    return "they look like pixels of a downscaled image (hires/lowres) or another unit, not full-resolution pixels"


def check_coordinate_units(section: "Section", where: str) -> None:
    """A :class:`DataError` when the coordinates cannot be full-resolution pixels for the spot size and image."""
    xy = np.asarray(section.coords, dtype=np.float64)
    n = len(xy)
    if n < MIN_SPOTS:
        return
    fix = "store (x, y) in full-resolution pixels in obsm['spatial'] (or pass --coords with full-res px)"
    n_unique = len(np.unique(xy, axis=0))
    if n_unique <= n // 2:
        raise DataError(f"{where}: the {n} spots have only {n_unique} distinct position{'s' if n_unique != 1 else ''}, so the coordinates are "
                        f"degenerate (zeros, rounded or a wrong column?); {fix}")
    diam = section.spot_diameter
    if diam is not None and np.isfinite(diam) and diam > 0:
        nn = median_nn_distance(xy)
        if nn > 0 and nn < MIN_SPACING_PER_DIAMETER * diam:
            raise DataError(
                f"{where}: spots are {nn:.3g} px apart (median nearest neighbour) but {diam:.3g} full-res px wide "
                f"(spot_diameter_fullres), so the coordinates are not full-resolution pixels: "
                f"{_unit_hint(section, nn / diam)}; {fix}")
    if section.image is not None and section.image_scale:
        s = float(section.image_scale)
        w, h = section.image.width, section.image.height
        hi_raw = xy.max(axis=0)
        hi = hi_raw * s
        if w > 0 and h > 0 and s < 0.9 and np.all(xy.min(axis=0) >= 0) and hi_raw[0] <= w and hi_raw[1] <= h \
                and hi[0] < CORNER_FRACTION * w and hi[1] < CORNER_FRACTION * h:
            raise DataError(
                f"{where}: all {n} spots lie in the top-left {hi[0]:.0f}×{hi[1]:.0f} px corner of the {w}×{h} px "
                f"image after scaling by {s:g}, while unscaled they span the image: the coordinates are probably "
                f"already image pixels, not full-resolution pixels; {fix}, or pass --scale 1 if the coordinates "
                "are pixels of this image")


def counts_warning(section: "Section") -> str | None:
    """A warning text when the counts are not whole numbers (normalised or log data given as counts)."""
    data = section.counts.data[:200_000]
    data = data[np.isfinite(data)]
    if data.size and not np.all(data == np.round(data)):
        return (f"section {section.name!r}: the counts have non-integer values (normalised or log data?); stmm "
                "expects raw counts — give the raw-count layer with --counts-layer")
    return None


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """Collect the text of the user warnings raised inside the block (and still show them)."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if issubclass(w.category, UserWarning) and "stmm" in str(w.filename):
            text = str(w.message)
            if text not in found:
                found.append(text)


def section_fingerprint(section: "Section") -> str:
    """sha256 over spot ids, coordinates and per-spot count totals: the same section under any file name."""
    import hashlib

    h = hashlib.sha256()
    h.update("\n".join(map(str, section.obs_names)).encode())
    h.update(np.ascontiguousarray(np.asarray(section.coords, dtype=np.float64)).tobytes())
    h.update(np.asarray(section.counts.sum(axis=1), dtype=np.float64).ravel().tobytes())
    return h.hexdigest()
