"""BANKSY (PyPI ``pybanksy``) domain segmentation on one section.

Settings of BANKSY's DLPFC domain-segmentation analyses: library-size normalisation (scale 5000, no log, as the
R vignette's "RC" normalisation), 2,000 highly variable genes (seurat_v3 on counts), ``k_geom`` 18 neighbours
with scaled-Gaussian weights, azimuthal Gabor filter (``max_m`` 1), ``lambda`` 0.2, PCA 20 → mclust; R's mclust
is replaced by stmm's gmm task (tied covariance = EEE) on the package's 20 PCs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_peers.common import cluster, quiet, require, section_anndata

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section

MODULES = ["banksy", "igraph"]


def cluster_domains(section: "Section", n_domains: int, seed: int, task: Any, device: str = "cpu",
                    lambda_param: float = 0.2, k_geom: int = 18, max_m: int = 1, n_hvg: int = 2000,
                    pca_dims: int = 20) -> tuple[np.ndarray, dict[str, Any]]:
    """BANKSY matrix → its PCA (numpy seeded with *seed*) → stmm's clustering → (labels, details)."""
    require("banksy-package", MODULES)
    import scanpy as sc
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from banksy_utils.umap_pca import pca_umap
    from importlib.metadata import version

    adata = section_anndata(section)
    t0 = time.perf_counter()
    n_top = min(int(n_hvg), adata.n_vars)
    with quiet():
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top)
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
        sc.pp.normalize_total(adata, target_sum=5000)
        adata.obs["x"], adata.obs["y"] = adata.obsm["spatial"][:, 0], adata.obsm["spatial"][:, 1]
        bdict = initialize_banksy(adata, ("x", "y", "spatial"), num_neighbours=int(k_geom),
                                  nbr_weight_decay="scaled_gaussian", max_m=int(max_m), plt_edge_hist=False,
                                  plt_nbr_weights=False, plt_agf_angles=False, plt_theta=False)
        bdict, _ = generate_banksy_matrix(adata, bdict, [float(lambda_param)], int(max_m), verbose=False)
        # its PCA takes no random_state (randomized SVD on a large matrix): seed numpy's global generator as
        # the R vignette does with set.seed before runBanksyPCA, so a run is repeatable
        np.random.seed(int(seed))
        pca_umap(bdict, pca_dims=[int(pca_dims)], plt_remaining_var=False, add_umap=False)
    pcs = np.asarray(bdict["scaled_gaussian"][float(lambda_param)]["adata"].obsm[f"reduced_pc_{int(pca_dims)}"])
    embed_s = time.perf_counter() - t0
    labels = cluster(pcs, n_domains, seed, task)
    details = {"package": "pybanksy", "version": version("pybanksy"), "lambda": float(lambda_param),
               "k_geom": int(k_geom), "max_m": int(max_m), "n_hvg": n_top, "pca": int(pca_dims),
               "embed_seconds": round(embed_s, 2)}
    return labels, details
