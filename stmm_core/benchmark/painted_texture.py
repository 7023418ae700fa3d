"""End-to-end informative-image bench: a synthetic image with a per-domain texture painted at the spot positions.

The feature-level bench (:mod:`stmm_core.benchmark.image_signal`) mixes information into encoder *features*; this
one paints it into *pixels*, so the tiling (tile size, image scale, resizing) and the image encoder are exercised
as in a real fit. For every spot a square of side ``cover × spot diameter`` around it is painted (everything
else is background); the pixel value at image position ``(x, y)`` of spot ``i`` is::

    v(x, y) = background + A · [ s · T_{L_i}(x, y) + (1 − s) · T_{R_i}(x, y) ] + noise

with ``L_i`` the spot's true domain, ``R_i`` a domain drawn uniformly at random for that spot (the *random
texture*), ``s ∈ [0, 1]`` the strength dial and ``T_k`` the texture of domain ``k``: stripes whose orientation
and period depend on ``k`` (orientations spread over 180°, periods cycling through a few values) plus a colour
tint of that domain. At ``s = 0`` every spot carries the texture of a random domain: the image is as textured as
at ``s = 1`` but says nothing about the domains; at ``s = 1`` it shows each spot's own domain. Pixel noise
(Gaussian, sd ``noise``) is independent per pixel and seeded. Unlabelled spots get ``s = 0`` (random texture
only), so they are not given away.

Coordinates stay in full-resolution pixels; the image is stored at ``scale`` (image px per full-res px), as a
hires image would be, and the section's ``image_scale`` says so.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section

#: Stripe periods (image px at the painted scale) cycled over domains; orientations are k·180°/K.
PERIODS = (5.0, 8.0, 13.0)
BACKGROUND = np.array([236.0, 226.0, 232.0])  # pale pink, as an unstained slide margin


def domain_palette(k: int, seed: int = 0) -> np.ndarray:
    """``(k, 3)`` RGB tints (each channel in ±1) for the ``k`` domains; seeded, fixed across strengths."""
    rng = np.random.default_rng(10_000 + seed)
    t = rng.standard_normal((k, 3))
    return t / np.maximum(np.abs(t).max(1, keepdims=True), 1e-9)


def paint_image(coords: np.ndarray, labels: np.ndarray, *, spot_diameter: float, scale: float, strength: float,
                seed: int = 0, amplitude: float = 60.0, tint: float = 0.35, noise: float = 12.0,
                cover: float = 1.25) -> np.ndarray:
    """Paint the image (module docstring).

    Args:
        coords: ``(N, 2)`` spot positions (x, y) in full-resolution px. labels: ``(N,)`` integer domain per spot,
            ``-1`` for unlabelled (random texture only).
        spot_diameter: in full-resolution px. scale: image px per full-resolution px.
        strength: ``s`` in [0, 1], the share of the spot's own texture against a random domain's.
        seed: random domains, palette and pixel noise. amplitude: texture amplitude (grey levels).
        tint: share of the amplitude given to the domain's colour (the rest to its stripes). noise: pixel sd.
        cover: painted square side in spot diameters (≥ 1 so that the default tile lies inside it).

    Returns:
        ``(H, W, 3) uint8``, big enough to hold every painted square.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if scale <= 0 or spot_diameter <= 0:
        raise ValueError("scale and spot_diameter must be > 0")
    lab = np.asarray(labels, dtype=np.int64)
    k = int(lab.max()) + 1 if (lab >= 0).any() else 1
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, k, size=len(lab))
    s = np.where(lab >= 0, float(strength), 0.0)
    own = np.where(lab >= 0, lab, 0)
    theta = np.pi * np.arange(k) / k
    period = np.array([PERIODS[i % len(PERIODS)] for i in range(k)])
    palette = domain_palette(k, seed)

    c = np.asarray(coords, dtype=np.float64) * scale
    half = max(int(np.ceil(cover * spot_diameter * scale / 2.0)), 2)
    width = int(np.ceil(c[:, 0].max())) + half + 2
    height = int(np.ceil(c[:, 1].max())) + half + 2
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND.astype(np.uint8)
    off = np.arange(-half, half + 1)
    phase = rng.uniform(0, 2 * np.pi, size=k)
    for start in range(0, len(lab), 256):  # chunks bound the memory (256 × side² × 3 floats)
        sl = slice(start, min(start + 256, len(lab)))
        cx = np.rint(c[sl, 0]).astype(np.int64)
        cy = np.rint(c[sl, 1]).astype(np.int64)
        xs = np.clip(cx[:, None] + off[None, :], 0, width - 1)  # (n, side)
        ys = np.clip(cy[:, None] + off[None, :], 0, height - 1)

        def stripes(dom: np.ndarray) -> np.ndarray:
            u = (xs[:, None, :] * np.cos(theta[dom])[:, None, None]
                 + ys[:, :, None] * np.sin(theta[dom])[:, None, None])  # (n, side_y, side_x)
            return np.sin(2 * np.pi * u / period[dom][:, None, None] + phase[dom][:, None, None])

        w = s[sl][:, None, None]
        pattern = w * stripes(own[sl]) + (1 - w) * stripes(rand[sl])  # (n, side, side)
        colour = w[:, :, 0] * palette[own[sl]] + (1 - w[:, :, 0]) * palette[rand[sl]]  # (n, 3)
        val = (BACKGROUND[None, None, None, :]
               + amplitude * (1 - tint) * pattern[..., None]
               + amplitude * tint * colour[:, None, None, :]
               + rng.normal(0.0, noise, size=pattern.shape + (3,)))
        img[ys[:, :, None], xs[:, None, :]] = np.clip(np.rint(val), 0, 255).astype(np.uint8)
    return img


def painted_section(section: "Section", labels: np.ndarray, strength: float, *, seed: int = 0, scale: float = 0.5,
                    **kwargs: float) -> "Section":
    """A copy of *section* whose image is the painted one (``labels`` as in :func:`paint_image`, or strings with
    missing values; categories are sorted). Counts, coordinates, graph inputs and obs are unchanged."""
    from stmm_core.data.image import ArrayImage

    lab = _codes(labels)
    diameter = float(section.spot_diameter or _median_spacing(section.coords))
    img = paint_image(section.coords, lab, spot_diameter=diameter, scale=scale, strength=strength, seed=seed,
                      **kwargs)
    return dataclasses.replace(section, image=ArrayImage(img, name=f"painted s={strength:g} seed={seed}"),
                               image_scale=float(scale), spot_diameter=diameter)


def _codes(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    from stmm_core.benchmark.image_signal import one_hot

    h = one_hot(arr)
    return np.where(h.sum(1) > 0, h.argmax(1), -1).astype(np.int64)


def _median_spacing(coords: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(d[:, 1]))
