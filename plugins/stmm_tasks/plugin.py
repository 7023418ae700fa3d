"""Registers the bundled clustering tasks."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_tasks.params import GMMParams, KMeansParams, LeidenParams


@hookimpl
def stmm_components():
    return [
        ComponentInfo("gmm", "task", "stmm_tasks.clustering:GMMClustering", GMMParams,
                      "Gaussian mixture on a PCA of the embedding (pure-Python stand-in for R mclust EEE)",
                      aliases=("mclust",)),
        ComponentInfo("leiden", "task", "stmm_tasks.clustering:LeidenClustering", LeidenParams,
                      "Leiden on a kNN graph of the embedding, resolution searched to reach K"),
        ComponentInfo("kmeans", "task", "stmm_tasks.clustering:KMeansClustering", KMeansParams, "k-means"),
    ]
