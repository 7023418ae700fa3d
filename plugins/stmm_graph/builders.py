"""Spatial graph builders on spot coordinates (scipy ``cKDTree``; PyG's radius/knn need pyg-lib).

Every graph is symmetric, has no self loops, is coalesced (no duplicate edges), and lists its edges sorted
by ``(src, dst)`` so the result is deterministic. ``edge_index`` is int64 ``(2, E)``, ``distances`` float32
``(E,)`` in the coordinate unit (full-resolution pixels).

Differences from StereoMM (``seeds-spec.md`` A5, A8.10): self loops are never stored (layers add their own),
a radius is optional (default: 1.5 × the median nearest-neighbour distance), kNN is symmetrised by union, no
edge list is cached on disk, and an empty graph is an error instead of a silent no-op.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stmm_core.errors import DataError, SpecError
from stmm_core.interfaces import GraphBuilder, SpatialGraph

from .params import KnnGraphParams, RadiusGraphParams

#: Relative tolerance added to the radius, so spots exactly at the radius survive float rounding.
_RADIUS_RTOL = 1e-6


def _check_coords(coords: np.ndarray) -> np.ndarray:
    """Validate ``(N, 2)`` (or ``(N, 3)``) finite coordinates and return them as contiguous float64."""
    arr = np.asarray(coords)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise DataError(f"spot coordinates must be an (N, 2) array, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise DataError(f"a spatial graph needs at least 2 spots, got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(f"{bad} spot coordinates are NaN or infinite; drop those spots or fix obsm['spatial']")
    return arr


def _median_positive(d: np.ndarray) -> float | None:
    """Median over rows of the smallest positive distance in ``d`` ``(N, j)``; None if there is none."""
    pos = np.where(d > 0, d, np.inf).min(axis=1)
    pos = pos[np.isfinite(pos)]
    return float(np.median(pos)) if pos.size else None


def _median_nn_distance(tree, coords: np.ndarray, max_queries: int = 200_000) -> float:
    """Median distance to the nearest *other* spot, ignoring duplicated positions (distance 0).

    Estimated on an evenly strided subsample of at most ``max_queries`` spots (deterministic).
    """
    stride = max(1, -(-coords.shape[0] // max_queries))
    d, _ = tree.query(coords[::stride], k=min(coords.shape[0], 4), workers=-1)
    med = _median_positive(d[:, 1:])
    if med is None:
        raise DataError("all spots share the same coordinates; check obsm['spatial']")
    return med


def _finish(src: np.ndarray, dst: np.ndarray, coords: np.ndarray, n: int, meta: dict) -> SpatialGraph:
    """Drop self loops, coalesce, sort by (src, dst), compute float32 distances."""
    src = src.astype(np.int64, copy=False)
    dst = dst.astype(np.int64, copy=False)
    keep = src != dst
    # coalesce and sort by (src, dst) through a CSR conversion: O(E), much faster than np.unique here
    adj = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (src[keep], dst[keep])), shape=(n, n)
    )
    adj.sum_duplicates()
    adj.sort_indices()
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(adj.indptr))
    dst = adj.indices.astype(np.int64)
    edge_index = np.ascontiguousarray(np.stack([src, dst]), dtype=np.int64)
    diff = coords[src] - coords[dst]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)
    meta = dict(meta)
    meta["n_edges"] = int(edge_index.shape[1])
    meta["mean_degree"] = float(edge_index.shape[1] / n)
    meta["isolated_spots"] = int(n - np.count_nonzero(np.bincount(src, minlength=n)))
    return SpatialGraph(edge_index=edge_index, n_nodes=n, distances=dist, meta=meta)


class RadiusGraph(GraphBuilder):
    """Edges between spots at distance ≤ radius (both directions, no self loops).

    ``radius`` defaults to ``radius_factor × median nearest-neighbour distance`` (1.5 → the 6 neighbours on
    a Visium hex lattice, 8 on a square grid; ``radius`` = bin size gives StereoMM's 4-neighbour grid).
    ``meta``: method, radius, median NN distance,
    mean degree, number of isolated spots.
    """

    shapes = {"coords": "(N, 2) float", "return": "edge_index (2, E) int64"}

    def __init__(self, params: RadiusGraphParams) -> None:
        super().__init__(params)

    def build(self, coords: np.ndarray, spot_diameter: float | None = None) -> SpatialGraph:
        """Build the radius graph on ``coords`` ``(N, 2)`` full-resolution pixels."""
        from scipy.spatial import cKDTree

        xy = _check_coords(coords)
        n = xy.shape[0]
        tree = cKDTree(xy)
        nn_med = _median_nn_distance(tree, xy)
        if self.params.radius is not None:
            radius, source = float(self.params.radius), "given"
        else:
            radius, source = self.params.radius_factor * nn_med, f"{self.params.radius_factor} x median NN"
        pairs = tree.query_pairs(radius * (1.0 + _RADIUS_RTOL), output_type="ndarray")
        if pairs.shape[0] == 0:
            raise SpecError(
                f"the radius graph has no edges: radius {radius:.4g} px is too small "
                f"(median nearest-neighbour distance is {nn_med:.4g} px); increase radius"
            )
        src = np.concatenate([pairs[:, 0], pairs[:, 1]])
        dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
        meta = {
            "method": "radius",
            "radius": radius,
            "radius_source": source,
            "median_nn_distance": nn_med,
            "spot_diameter": spot_diameter,
        }
        return _finish(src, dst, xy, n, meta)


class KnnGraph(GraphBuilder):
    """Each spot linked to its ``k`` nearest other spots, symmetrised by union (degree between k and ~2k).

    Ties at equal distance are broken by cKDTree order (deterministic for given coordinates), or, with
    ``ties="graphst"``, as GraphST's ``construct_interaction`` breaks them: numpy's ``argsort`` of each spot's
    exact distance row (identical to the package on integer pixel coordinates, as Visium's are, where every
    distance is exact). That mode also records each spot's own picks (``SpatialGraph.rank``), which a read-out over
    the nearest neighbours then takes, as GraphST's does. It costs O(N²) time (rows in chunks, O(chunk·N) memory).
    """

    shapes = {"coords": "(N, 2) float", "return": "edge_index (2, E) int64"}

    def __init__(self, params: KnnGraphParams) -> None:
        super().__init__(params)

    def build(self, coords: np.ndarray, spot_diameter: float | None = None) -> SpatialGraph:
        """Build the symmetric kNN graph on ``coords`` ``(N, 2)`` full-resolution pixels."""
        from scipy.spatial import cKDTree

        xy = _check_coords(coords)
        n = xy.shape[0]
        k = self.params.k
        if k >= n:
            raise SpecError(f"knn graph: k={k} must be smaller than the number of spots ({n}); lower k")
        if self.params.ties == "graphst":
            idx, dist = _argsort_neighbours(xy, k)
            return _ranked(idx, dist, xy, n, {"method": "knn", "k": k, "ties": "graphst",
                                              "median_nn_distance": _median_positive(dist),
                                              "spot_diameter": spot_diameter})
        tree = cKDTree(xy)
        dist, idx = tree.query(xy, k=k + 1, workers=-1)  # (N, k+1), usually self first
        idx = idx.astype(np.int64, copy=False)
        rows = np.arange(n, dtype=np.int64)[:, None]
        not_self = idx != rows
        # keep the first k non-self neighbours of each row (a row holds self at most once)
        keep = not_self & (np.cumsum(not_self, axis=1) <= k)
        src = np.broadcast_to(rows, idx.shape)[keep]
        dst = idx[keep]
        meta = {
            "method": "knn",
            "k": k,
            "median_nn_distance": _median_positive(dist[:, 1:]),
            "spot_diameter": spot_diameter,
        }
        return _finish(np.concatenate([src, dst]), np.concatenate([dst, src]), xy, n, meta)


def _argsort_neighbours(xy: np.ndarray, k: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Each spot's ``k`` nearest other spots ``(N, k)`` and their distances, in GraphST's order.

    GraphST (``construct_interaction``) takes ``argsort(distance_row)[1:k+1]`` of the full distance matrix. On
    integer coordinates every squared distance is an exact float64, so ``sqrt`` of it gives the package's values
    and numpy's (introsort) ``argsort`` of the same row gives its order of tied spots. The spot itself is skipped
    wherever it sorts (GraphST takes positions 1…k, the same when no two spots share coordinates).
    """
    n = xy.shape[0]
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        d = np.sqrt(((xy[rows, None, :] - xy[None, :, :]) ** 2).sum(-1))
        order = np.argsort(d, axis=1)[:, : k + 1]
        not_self = order != rows[:, None]
        keep = not_self & (np.cumsum(not_self, axis=1) <= k)
        idx[rows] = order[keep].reshape(len(rows), k)
        dist[rows] = np.take_along_axis(d, idx[rows], axis=1)
    return idx, dist


def _ranked(idx: np.ndarray, dist: np.ndarray, xy: np.ndarray, n: int, meta: dict) -> SpatialGraph:
    """The symmetric union of the picks ``idx`` ``(N, k)``, with each edge's rank among its target's own picks."""
    k = idx.shape[1]
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    graph = _finish(np.concatenate([rows, idx.ravel()]), np.concatenate([idx.ravel(), rows]), xy, n, meta)
    # edge j -> i carries the position of j in i's own list (stored + 1 so that 0 means "not picked")
    picked = sp.csr_matrix((np.tile(np.arange(1, k + 1, dtype=np.float64), n), (idx.ravel(), rows)), shape=(n, n))
    src, dst = graph.edge_index
    graph.rank = (np.asarray(picked[src, dst]).ravel() - 1).astype(np.int16)
    return graph
