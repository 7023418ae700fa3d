"""Shared fixtures and builders for the data-layer tests (import what you need from here).

Real data is read from ``$STMM_DATA`` (default ``../shared/data`` relative to the repository root); tests
that need it skip cleanly when it is absent. Synthetic sections are written to ``tmp_path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The real-data folder (``$STMM_DATA`` or ``../shared/data``, relative to the repository root)."""
    root = Path(os.environ.get("STMM_DATA", "../shared/data")).expanduser()
    return root if root.is_absolute() else (REPO / root).resolve()


def real_data(*parts: str) -> Path:
    """Path of a real-data file/folder, or skip the test when it is absent."""
    p = data_root().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


@pytest.fixture
def dlpfc_h5ad() -> Path:
    return real_data("dlpfc", "151676", "dlpfc_151676_5000genes_lowres.h5ad")


@pytest.fixture
def dlpfc_spatial() -> Path:
    return real_data("dlpfc", "151676", "spatial")


@pytest.fixture
def toy_visium() -> Path:
    return real_data("toy_visium")


@pytest.fixture
def her2st_c2_h5ad() -> Path:
    real_data("her2st", "ST-imgs", "C", "C2", "5714_HE_BT_C2.jpg")
    return real_data("her2st", "h5ad", "her2st_C2.h5ad")


@pytest.fixture(autouse=False)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point ``$STMM_CACHE_DIR`` at a temporary folder."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STMM_CACHE_DIR", str(root))
    return root


# ------------------------------------------------------------------------------------ synthetic data
def synthetic_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with a smooth gradient plus noise (every region differs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    img = img + rng.integers(0, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_adata(
    n_spots: int = 30,
    n_genes: int = 12,
    *,
    seed: int = 0,
    image: bool = True,
    scale: float = 0.1,
    library_id: str = "lib1",
):
    """A small AnnData in the scanpy/squidpy convention: integer counts, (x, y) full-res px on a grid,
    a ``lowres`` image that covers every spot at ``tissue_lowres_scalef = scale``."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_spots, n_genes)).astype(np.float32)
    counts[:, 0] += 1  # no empty spot
    side = int(np.ceil(np.sqrt(n_spots)))
    ii = np.arange(n_spots)
    coords = np.stack([100.0 + 50.0 * (ii % side), 100.0 + 50.0 * (ii // side)], axis=1)
    obs = pd.DataFrame({"label": [f"d{i % 3}" for i in ii]}, index=[f"spot{i}" for i in ii])
    var = pd.DataFrame({"symbol": [f"SYM{j}" for j in range(n_genes)]}, index=[f"ENSG{j:011d}" for j in range(n_genes)])
    adata = anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.obsm["spatial"] = coords
    if image:
        h = int(np.ceil((coords[:, 1].max() + 100) * scale))
        w = int(np.ceil((coords[:, 0].max() + 100) * scale))
        adata.uns["spatial"] = {
            library_id: {
                "images": {"lowres": synthetic_image(h, w, seed)},
                "scalefactors": {"tissue_lowres_scalef": scale, "tissue_hires_scalef": scale * 3,
                                 "spot_diameter_fullres": 40.0},
            }
        }
    return adata


def write_h5ad(tmp_path: Path, adata, name: str = "section.h5ad") -> Path:
    """Write *adata* to ``tmp_path/name`` and return the path."""
    path = Path(tmp_path) / name
    adata.write_h5ad(path)
    return path


def make_section(n_spots: int = 30, n_genes: int = 12, *, image: np.ndarray | None = None, scale: float = 1.0,
                 coords: np.ndarray | None = None, spot_diameter: float | None = None, seed: int = 0):
    """A :class:`Section` built directly (no file), optionally with an in-memory image."""
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.data.image import ArrayImage
    from stmm_core.data.section import Section

    adata = make_adata(n_spots, n_genes, seed=seed, image=False)
    xy = np.asarray(coords if coords is not None else adata.obsm["spatial"], dtype=np.float64)
    return Section(
        name="synthetic",
        obs_names=pd.Index(adata.obs_names),
        counts=sp.csr_matrix(adata.X, dtype=np.float32),
        gene_names=pd.Index(adata.var_names),
        coords=xy,
        image=ArrayImage(image) if image is not None else None,
        image_scale=scale if image is not None else None,
        spot_diameter=spot_diameter,
        obs=adata.obs.copy(),
        adata=adata,
    )
