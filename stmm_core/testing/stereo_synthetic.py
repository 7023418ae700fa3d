"""Synthetic Stereo-seq-like sections at any size (10k to millions of bins), for scale benchmarks and tests.

* bins on a square lattice (``bin_size`` DNB; coordinates in full-resolution px = 1 px per DNB, the ssDNA/H&E
  registration convention), kept inside an irregular tissue outline (a wobbly ellipse);
* spatially smooth domains (curved bands plus a round inclusion), negative-binomial counts with a
  domain-dependent mean: ~90–95 % zeros per bin, like bin50 Stereo-seq data;
* optional precomputed "image features" (a per-domain signature plus noise) for runs that skip tiling;
* :func:`write_synthetic_tiff`: an H&E-like RGB image of the section written tile by tile into a tiled TIFF,
  so the image can be far larger than memory.

Counts are generated in row chunks; memory is O(nnz), never O(N × G) dense. Everything is labelled as synthetic
(``uns["synthetic"]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import anndata


def stereo_domains(x: np.ndarray, y: np.ndarray, extent: float, n_domains: int) -> np.ndarray:
    """Smooth domains on ``[0, extent]²``: curved bands (``n_domains - 1``) plus a round inclusion (the last)."""
    bend = 0.08 * extent * np.sin(2 * np.pi * x / extent)
    band = np.clip(np.floor((y + bend) / extent * (n_domains - 1)).astype(np.int64), 0, max(n_domains - 2, 0))
    cx, cy, r = 0.68 * extent, 0.4 * extent, 0.14 * extent
    inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r
    return np.where(inside, n_domains - 1, band)


def _tissue(x: np.ndarray, y: np.ndarray, extent: float) -> np.ndarray:
    """Irregular tissue outline: an ellipse whose radius wobbles with the angle."""
    c = extent / 2.0
    ang = np.arctan2(y - c, x - c)
    rad = 0.47 * extent * (1.0 + 0.06 * np.sin(3 * ang) + 0.04 * np.cos(5 * ang))
    return ((x - c) / 1.0) ** 2 + ((y - c) / 0.9) ** 2 < rad**2


def stereo_layout(n_bins: int, bin_size: float = 50.0) -> tuple[np.ndarray, float]:
    """``(N', 2)`` bin centres (N' ≈ n_bins) inside the tissue outline, and the lattice extent in px."""
    side = int(math.ceil(math.sqrt(n_bins / 0.66)))
    for _ in range(20):
        extent = side * bin_size
        g = (np.arange(side) + 0.5) * bin_size
        gx, gy = np.meshgrid(g, g)
        keep = _tissue(gx.ravel(), gy.ravel(), extent)
        if keep.sum() >= n_bins:
            break
        side = int(side * 1.05) + 1
    xy = np.stack([gx.ravel()[keep], gy.ravel()[keep]], 1)
    if len(xy) > n_bins:  # trim the outermost bins so that exactly n_bins remain
        c = extent / 2.0
        order = np.argsort(np.hypot(xy[:, 0] - c, (xy[:, 1] - c) / 0.9), kind="stable")[:n_bins]
        xy = xy[np.sort(order)]
    return xy.astype(np.float64), float(extent)


def make_stereo_like(
    n_bins: int = 10_000,
    n_genes: int = 500,
    n_domains: int = 7,
    bin_size: float = 50.0,
    seed: int = 0,
    mean_count: float = 0.08,
    dispersion: float = 1.0,
    image_feature_dim: int | None = 64,
    chunk: int = 50_000,
) -> "anndata.AnnData":
    """A synthetic Stereo-seq-like bin AnnData: ``X`` CSR float32 counts, ``obsm["spatial"]`` (px),
    ``obs["domain"]`` (truth), and ``obsm["X_image_features"]`` when ``image_feature_dim`` is set."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    xy, extent = stereo_layout(n_bins, bin_size)
    n = len(xy)
    dom = stereo_domains(xy[:, 0], xy[:, 1], extent, n_domains)
    base = rng.gamma(0.5, mean_count / 0.5, size=n_genes)
    means = np.tile(base, (n_domains, 1))
    n_markers = max(1, n_genes // 10)
    for k in range(n_domains):
        idx = rng.choice(n_genes, size=n_markers, replace=False)
        means[k, idx] *= rng.uniform(3.0, 6.0, size=n_markers)
    depth = rng.lognormal(0.0, 0.4, size=n)
    blocks = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        mu = means[dom[start:stop]] * depth[start:stop, None]
        c = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float32)
        blocks.append(sp.csr_matrix(c))
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame({"domain": pd.Categorical([f"D{k}" for k in dom])},
                       index=pd.Index([f"bin{i}" for i in range(n)], dtype=str))
    var = pd.DataFrame(index=pd.Index([f"GENE{j:05d}" for j in range(n_genes)], dtype=str))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = xy
    if image_feature_dim:
        sig = rng.normal(size=(n_domains, image_feature_dim)).astype(np.float32)
        feats = sig[dom] * 0.5 + rng.normal(size=(n, image_feature_dim)).astype(np.float32)
        adata.obsm["X_image_features"] = feats
    adata.uns["synthetic"] = {
        "seed": seed, "bin_size": bin_size, "extent_px": extent, "n_domains": n_domains,
        "zero_fraction": float(1.0 - X.nnz / max(X.shape[0] * X.shape[1], 1)),
        "note": "synthetic Stereo-seq-like section made by stmm_core.testing.stereo_synthetic",
    }
    return adata


def write_synthetic_tiff(path: str | Path, extent: float, n_domains: int, image_scale: float = 0.5,
                         tile: int = 256, seed: int = 0) -> dict[str, Any]:
    """Write an H&E-like RGB tiled TIFF of the section (``extent · image_scale`` px square), one tile at a time.

    Returns ``{"path", "size_px", "image_scale"}``; memory stays at a few tiles whatever the image size.
    """
    import tifffile

    size = int(math.ceil(extent * image_scale))
    rng = np.random.default_rng(seed)
    palette = rng.uniform(90, 230, size=(n_domains + 1, 3)).astype(np.float32)
    palette[-1] = 245.0  # background

    def tiles():
        for ty in range(0, size, tile):
            for tx in range(0, size, tile):
                yy, xx = np.mgrid[ty:ty + tile, tx:tx + tile].astype(np.float64)
                x, y = (xx + 0.5) / image_scale, (yy + 0.5) / image_scale
                dom = stereo_domains(x, y, extent, n_domains)
                dom = np.where(_tissue(x, y, extent), dom, n_domains)
                t_rng = np.random.default_rng([seed, ty, tx])
                img = palette[dom] + t_rng.normal(0, 10, size=(tile, tile, 3)).astype(np.float32)
                img += (12 * np.sin(xx / (2.0 + dom)))[..., None]
                yield np.clip(img, 0, 255).astype(np.uint8)

    path = Path(path)
    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", bigtiff=size * size * 3 > 2**31)
    return {"path": str(path), "size_px": size, "image_scale": image_scale}
