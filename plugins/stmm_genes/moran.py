"""Spatially variable genes: Moran's I of each gene's log-normalised expression on a k-nearest-neighbour graph.

Ranks genes by how much a spot's value resembles its neighbours' (Moran's I, as squidpy's
``spatial_autocorr(mode="moran")`` and SpaGCN/BANKSY-style SVG screens do) rather than by variance alone, so genes
that vary *between tissue regions* are preferred to genes whose variance is spot-level noise. The statistic is
scanpy's ``scanpy.metrics.morans_i`` (a pinned dependency; numba-accelerated, sparse-aware), on a symmetric binary
k-NN graph of the spot positions built with scikit-learn. Why a k-NN graph and not the recipe's spatial graph: the
gene encoder is fitted before (and independently of) the graph builder, and k-NN needs no radius in a coordinate
unit that differs between platforms. Why not ``stmm_core.pipeline.image_weight.morans_i`` (the image weight's
statistic): it takes dense ``(N, k)`` values for a few principal components; here it is thousands of sparse gene
columns, which scanpy handles without densifying.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def knn_graph(coords: np.ndarray, k: int) -> sp.csr_matrix:
    """Symmetric binary ``(N, N)`` graph joining each spot to its *k* nearest others (float64 CSR)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(coords)
    k = int(min(k, n - 1))
    if k < 1:
        raise ValueError("a k-NN graph needs at least 2 spots")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(np.asarray(coords, dtype=np.float64))
    _, idx = nn.kneighbors()
    # ``kneighbors()`` without X leaves each point out of its own neighbours
    idx = idx[:, :k]
    rows = np.repeat(np.arange(n), k)
    g = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    g = g.maximum(g.T).tocsr()
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def morans_i(logn: sp.csr_matrix, coords: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of every column of *logn* ``(N, G)`` on the k-NN graph of *coords* ``(N, 2)``; float64 ``(G,)``.

    Constant genes get NaN (ranked last by the caller)."""
    import warnings

    from stmm_core.errors import require

    sc = require("scanpy", "spatially variable genes (flavor moran)")
    graph = knn_graph(coords, k)
    vals = sp.csr_matrix(logn.T, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant genes: 0/0, reported as NaN
        score = np.asarray(sc.metrics.morans_i(graph, vals), dtype=np.float64)
    return score
