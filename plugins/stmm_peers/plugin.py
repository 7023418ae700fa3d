"""Registers the peer-package recipes through the same ``stmm_recipes`` hook a third-party package uses.

Light on purpose: nothing of GraphST/BANKSY (or torch) is imported here. A recipe's ``domains_method``
(``module:function``) is what ``stmm benchmark domains`` calls instead of an stmm fit; ``requires`` names the
modules it needs, checked before anything runs.
"""

from __future__ import annotations

from typing import Any

from stmm_core import hookimpl

#: Only the clustering task of this spec is used: the package's embedding is clustered by stmm's ``gmm`` task
#: (PCA 20, tied covariance = mclust EEE, 20 EM restarts, random_state = the run seed) like stmm's recipes.
_CLUSTERING_SPEC: dict[str, Any] = {
    "pipeline": "graph-fusion",
    "components": {
        "gene": {"name": "pca", "params": {"n_top_genes": 3000, "pca": 30}},
        "fusion": {"name": "concat", "params": {}},
        "builder": {"name": "knn", "params": {}},
        "graph": {"name": "identity", "params": {}},
        "task": {"name": "gmm", "params": {}},
    },
    "train": {"epochs": 1},
    "domains": {"refine_neighbors": 0},
}

_NOTE = ("Runs the package itself (not an stmm pipeline) inside 'stmm benchmark domains' only; of this spec only the "
         "clustering task (gmm: PCA 20, tied covariance) is used, on the package's embedding.")


def peer_recipes() -> list[dict[str, Any]]:
    """The recipe dicts (also used by tests)."""
    return [
        {
            "name": "graphst-package",
            "summary": "Peer package GraphST 1.1.1 (PyPI GraphST), its DLPFC tutorial recipe: GraphST(adata).train() "
                       "(600 epochs, seurat_v3 HVG 3000, 3-NN spot graph) -> tied-covariance GMM on PCA 20 (mclust "
                       "EEE stand-in) -> its refine_label(radius=50); needs pip install .[peers]",
            "reference": "Long et al., Nat Commun 14:1155 (2023); GraphST tutorial 'DLPFC' (mclust, refinement=True, "
                         "radius=50)",
            "method": "graphst-package",
            "baseline": True,
            "domains_method": "stmm_peers.graphst_pkg:cluster_domains",
            "requires": ["GraphST", "ot", "skmisc"],
            "extra": "peers",
            "spec": {**_CLUSTERING_SPEC, "recipe": "graphst-package"},
            "defaults_note": _NOTE,
        },
        {
            "name": "graphst-package-sparse",
            "summary": "graphst-package with its N x N propagation matrix handed to the package as a torch sparse tensor "
                       "(same values, the package's own code otherwise; only the float summation order differs): "
                       "~3x faster on CPU, for more seeds; needs pip install .[peers]",
            "reference": "as graphst-package",
            "method": "graphst-package",
            "baseline": True,
            "domains_method": "stmm_peers.graphst_pkg:cluster_domains_sparse",
            "requires": ["GraphST", "ot", "skmisc"],
            "extra": "peers",
            "spec": {**_CLUSTERING_SPEC, "recipe": "graphst-package-sparse"},
            "defaults_note": _NOTE,
        },
        {
            "name": "banksy-package",
            "summary": "Peer package BANKSY (PyPI pybanksy 1.3.5), domain segmentation: library-size normalisation (5000, no log), HVG 2000 (seurat_v3), "
                       "BANKSY matrix (k_geom 18, scaled-Gaussian weights, AGF max_m 1, lambda 0.2) -> PCA 20 -> "
                       "tied-covariance GMM (mclust stand-in); needs pip install .[peers]",
            "reference": "Singhal et al., Nat Genet 56:431 (2024); settings of the BANKSY DLPFC domain-segmentation "
                         "vignette (lambda 0.2, k_geom 18, AGF, 20 PCs, mclust)",
            "method": "banksy-package",
            "baseline": True,
            "domains_method": "stmm_peers.banksy_pkg:cluster_domains",
            "requires": ["banksy", "igraph"],
            "extra": "peers",
            "spec": {**_CLUSTERING_SPEC, "recipe": "banksy-package"},
            "defaults_note": _NOTE,
        },
    ]


@hookimpl
def stmm_recipes():
    return peer_recipes()
