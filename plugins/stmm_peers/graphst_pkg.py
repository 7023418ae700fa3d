"""The GraphST package (PyPI ``GraphST``) on one section, its DLPFC tutorial recipe.

Tutorial: ``model = GraphST.GraphST(adata, device=device); adata = model.train()`` (600 epochs; its own
preprocessing: seurat_v3 HVG 3000, normalize_total 1e4, log1p, scale; 3-NN spot graph), then
``clustering(adata, n_clusters, radius=50, method='mclust', refinement=True)``. R's mclust (EEE) is replaced by
stmm's gmm task (PCA 20, tied covariance = EEE; sklearn, k-means initialised), the refinement is the package's
own ``refine_label(adata, radius=50)``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_peers.common import cluster, quiet, require, section_anndata

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section

MODULES = ["GraphST", "ot", "skmisc"]


def cluster_domains_sparse(section: "Section", n_domains: int, seed: int, task: Any, device: str = "cpu",
                           epochs: int = 600, radius: int = 50) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`cluster_domains` with the package's propagation matrix stored as a torch sparse tensor."""
    return cluster_domains(section, n_domains, seed, task, device, epochs, radius, sparse_adj=True)


def cluster_domains(section: "Section", n_domains: int, seed: int, task: Any, device: str = "cpu",
                    epochs: int = 600, radius: int = 50,
                    sparse_adj: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Train GraphST (``random_seed=seed``), cluster its embedding into K, refine → (labels, details).

    ``sparse_adj``: hand the package its ``D^-1/2 A D^-1/2 + I`` (``model.adj``, dense N × N) as a torch sparse
    tensor with the same values before training; the package's ``torch.mm(adj, ·)`` then costs O(E·D) instead of
    O(N²·D). Nothing else changes (same code, seeds and draws; only the float summation order differs).
    """
    require("graphst-package", MODULES)
    import torch
    from GraphST import GraphST
    from GraphST.utils import refine_label
    from importlib.metadata import version

    adata = section_anndata(section)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    with quiet():
        model = GraphST.GraphST(adata, device=torch.device(device), epochs=int(epochs), random_seed=int(seed))
    torch.set_num_threads(threads)  # its preprocessing (scanpy/numba) resets torch's thread count
    with quiet():
        if sparse_adj:
            model.adj = model.adj.to_sparse()
        adata = model.train()
    train_s = time.perf_counter() - t0
    emb = np.asarray(adata.obsm["emb"])
    raw = cluster(emb, n_domains, seed, task)
    t1 = time.perf_counter()
    if radius > 0:
        adata.obs["domain"] = raw.astype(str)
        refined = np.asarray(refine_label(adata, radius, key="domain")).astype(np.int64)
    else:
        refined = raw
    details = {"package": "GraphST", "version": version("GraphST"), "epochs": int(epochs),
               "random_seed": int(seed), "sparse_adj": bool(sparse_adj), "n_hvg": int(adata.var["highly_variable"].sum()), "embedding_dim":
               int(emb.shape[1]), "refine_radius": int(radius), "train_seconds": round(train_s, 2),
               "refine_seconds": round(time.perf_counter() - t1, 2), "unrefined_labels": raw}
    return refined, details
