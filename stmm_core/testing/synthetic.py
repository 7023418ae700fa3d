"""Synthetic sections for tests and scale benchmarks (always labelled as synthetic in outputs).

A square lattice of spots with spatially smooth domains (bands bent by a sine), negative-binomial counts
whose means depend on the domain, and an H&E-like RGB image whose colour/texture also depends on the domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import anndata


def domain_map(x: np.ndarray, y: np.ndarray, n_domains: int, extent: float) -> np.ndarray:
    """Curved horizontal bands: smooth, contiguous domains like cortical layers."""
    bend = 0.08 * extent * np.sin(2 * np.pi * x / extent)
    band = np.floor((y + bend) / extent * n_domains).astype(int)
    return np.clip(band, 0, n_domains - 1)


def make_synthetic_adata(
    n_spots: int = 400,
    n_genes: int = 200,
    n_domains: int = 4,
    seed: int = 0,
    spacing: float = 100.0,
    image: bool = True,
    image_scale: float = 0.1,
    marker_fraction: float = 0.2,
    mean_counts: float = 1.0,
    dispersion: float = 2.0,
) -> "anndata.AnnData":
    """Return an AnnData in the scanpy/squidpy convention (obsm['spatial'] full-res px, uns['spatial']).

    ``obs['domain']`` holds the true domain. Memory is O(n_spots × n_genes) sparse; the image is
    ``(side·spacing·image_scale)²`` pixels.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    xy = np.stack([gx.ravel(), gy.ravel()], 1)[:n_spots].astype(np.float64)
    coords = (xy + 0.5) * spacing + spacing  # margin of one spacing around the lattice
    extent = (side + 2) * spacing
    dom = domain_map(coords[:, 0] - spacing, coords[:, 1] - spacing, n_domains, side * spacing)

    base = rng.gamma(0.6, mean_counts / 0.6, size=n_genes)
    n_markers = max(1, int(marker_fraction * n_genes))
    means = np.tile(base, (n_domains, 1))
    for k in range(n_domains):
        idx = rng.choice(n_genes, size=n_markers, replace=False)
        means[k, idx] *= rng.uniform(2.0, 4.0, size=n_markers)
    depth = rng.lognormal(0.0, 0.3, size=n_spots)
    mu = means[dom] * depth[:, None]
    p = dispersion / (dispersion + mu)
    counts = rng.negative_binomial(dispersion, p).astype(np.float32)
    X = sp.csr_matrix(counts)

    obs = pd.DataFrame(
        {"domain": pd.Categorical([f"D{k}" for k in dom]), "in_tissue": 1},
        index=[f"spot{i:07d}" for i in range(n_spots)],
    )
    var = pd.DataFrame(index=[f"GENE{j:05d}" for j in range(n_genes)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = coords
    adata.uns["synthetic"] = {"seed": seed, "note": "synthetic section made by stmm_core.testing.synthetic"}
    if image:
        size = int(np.ceil(extent * image_scale))
        palette = rng.uniform(90, 230, size=(n_domains, 3))
        yy, xx = np.mgrid[0:size, 0:size]
        pix_dom = domain_map(xx / image_scale - spacing, yy / image_scale - spacing, n_domains, side * spacing)
        img = palette[pix_dom] + rng.normal(0, 12, size=(size, size, 3))
        stripes = 15 * np.sin(xx / (2 + pix_dom)) [..., None]
        img = np.clip(img + stripes, 0, 255).astype(np.uint8)
        adata.uns["spatial"] = {
            "synthetic": {
                "images": {"hires": img},
                "scalefactors": {"tissue_hires_scalef": image_scale, "spot_diameter_fullres": 0.55 * spacing},
            }
        }
    return adata
