"""Spatial-domain clustering of an embedding into K domains.

* :class:`GMMClustering`: PCA then a Gaussian mixture; ``covariance="tied"`` is mclust's EEE model, which the
  DLPFC benchmarks use through R/rpy2 — here in pure Python (sklearn; initialised by k-means, not by mclust's
  hierarchical agglomeration, so labels can differ from R's on hard data).
* :class:`LeidenClustering`: Leiden (RB configuration model) on a kNN graph of the embedding, with a bisection
  on the resolution to reach exactly K clusters (StereoMM's ``find_res_binary``, with the extension of the
  upper bound and the closest result kept when K cannot be hit).
* :class:`KMeansClustering`: k-means, optionally after PCA.

All return int64 labels ``(N,)`` in ``[0, K')`` numbered by decreasing cluster size (``K' ≤ K`` when a
component ends up empty), deterministic for a given ``seed``. ``last_info`` holds diagnostics of the last
run (and ``"warning"`` when something was not as asked).

At scale (``max_fit``): GMM and k-means fit on a seeded random subsample and assign every spot with the
fitted model; Leiden runs on a subsample's kNN graph and every spot takes the majority label of its nearest
subsampled spots, so memory stays O(max_fit · n_neighbors) however many bins the section has.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from stmm_core.errors import DataError, SpecError
from stmm_core.interfaces import Task

from .params import GMMParams, KMeansParams, LeidenParams


def _prepare(embedding: np.ndarray, n_domains: int) -> np.ndarray:
    """Validate an ``(N, L)`` embedding and K; return a float64 copy for sklearn."""
    x = np.asarray(embedding)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"the embedding must be a non-empty (N, L) array, got shape {x.shape}")
    n = x.shape[0]
    if isinstance(n_domains, bool) or int(n_domains) != n_domains:
        raise SpecError(f"the number of domains must be an integer, got {n_domains!r}")
    if n_domains < 1:
        raise SpecError(f"the number of domains must be at least 1, got {n_domains}")
    if n_domains > n:
        raise DataError(f"K larger than the spots: asked for {n_domains} domains but there are only {n} spots")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError("the embedding contains NaN or infinite values (training diverged?); lower the learning rate")
    return x


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``0..K'-1`` by decreasing cluster size (ties: smaller original label first), int64."""
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((uniq, -counts))  # largest first
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    return rank[inverse.reshape(-1)]


def _pca(x: np.ndarray, n_components: int | None, seed: int) -> tuple[np.ndarray, int | None]:
    """PCA to ``n_components`` if that reduces the width, else the (unchanged) input."""
    if n_components is None or n_components >= min(x.shape):
        return x, None
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed).fit_transform(x), n_components


def subsample_rows(n: int, max_fit: int | None, seed: int) -> np.ndarray | None:
    """Sorted random row ids (at most ``max_fit``, seeded) to fit on, or None when all rows are used."""
    if max_fit is None or n <= max_fit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_fit), replace=False))


def _pca_fit_transform(x: np.ndarray, fit_rows: np.ndarray | None, n_components: int | None,
                       seed: int) -> tuple[np.ndarray, int | None]:
    """PCA fitted on ``x[fit_rows]`` (all rows if None) and applied to all rows; unchanged if it would not reduce."""
    if fit_rows is None:
        return _pca(x, n_components, seed)
    if n_components is None or n_components >= min(len(fit_rows), x.shape[1]):
        return x, None
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed).fit(x[fit_rows]).transform(x), n_components


def vote_labels(x_fit: np.ndarray, labels_fit: np.ndarray, x: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
    """Majority label of each row of ``x`` among its ``k`` nearest rows of ``x_fit`` (ties: nearest first).

    Memory O(chunk · k); the kNN index is over ``x_fit`` only.
    """
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(x_fit)))
    nn = NearestNeighbors(n_neighbors=k).fit(x_fit)
    n_lab = int(labels_fit.max()) + 1
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        idx = nn.kneighbors(x[start:start + chunk], return_distance=False)
        lab = labels_fit[idx]  # (c, k), nearest first
        votes = np.zeros((len(lab), n_lab), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(len(lab)), k), lab.reshape(-1)), 1.0)
        votes[np.arange(len(lab)), lab[:, 0]] += 0.5  # the nearest neighbour breaks ties
        out[start:start + chunk] = votes.argmax(1)
    return out


class GMMClustering(Task):
    """PCA (``pca`` components) → ``GaussianMixture(K, covariance, n_init, max_iter, random_state=seed)``."""

    shapes = {"embedding": "(N, L) float32", "return": "(N,) int64"}

    def __init__(self, params: GMMParams) -> None:
        super().__init__(params)
        self.last_info: dict[str, Any] = {}

    def run(self, embedding: np.ndarray, n_domains: int, seed: int = 0) -> np.ndarray:
        """Cluster ``embedding`` ``(N, L)`` into ``n_domains`` → int64 labels ``(N,)``."""
        return self.run_with_starts(embedding, n_domains, seed, starts=())

    def run_with_starts(self, embedding: np.ndarray, n_domains: int, seed: int = 0,
                        starts: Sequence[np.ndarray] = ()) -> np.ndarray:
        """As :meth:`run`, plus one EM started from each labelling in *starts* (each ``(N,)``, e.g. the labels of
        several seeds' fits; :func:`stmm_tasks.gmm_starts.mixture_start`); the fit of highest likelihood among
        the ``n_init`` restarts and those starts is kept. ``last_info["start"]``: which one won (``"restarts"``
        or the index into *starts*)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        from .gmm_starts import mixture_start

        p = self.params
        x = _prepare(embedding, n_domains)
        fit_rows = subsample_rows(len(x), p.max_fit, seed)
        x, used_pca = _pca_fit_transform(x, fit_rows, p.pca, seed)
        x_fit = x if fit_rows is None else x[fit_rows]
        common = {"n_components": int(n_domains), "covariance_type": p.covariance, "max_iter": p.max_iter,
                  "reg_covar": 1e-6, "random_state": seed}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            gmm = GaussianMixture(n_init=p.n_init, **common).fit(x_fit)
            won: Any = "restarts"
            bounds = [float(gmm.lower_bound_)]
            for i, lab in enumerate(starts):
                init = mixture_start(x_fit, np.asarray(lab)[fit_rows] if fit_rows is not None else lab,
                                     int(n_domains), p.covariance)
                if init is None:  # not K labels: no start from it
                    bounds.append(float("nan"))
                    continue
                other = GaussianMixture(n_init=1, **common, **init).fit(x_fit)
                bounds.append(float(other.lower_bound_))
                if other.lower_bound_ > gmm.lower_bound_:
                    gmm, won = other, i
            labels = gmm.predict(x)
        labels = relabel_by_size(labels)
        info: dict[str, Any] = {
            "pca": used_pca,
            "fitted_on": len(x_fit),
            "converged": bool(gmm.converged_),
            "n_iter": int(gmm.n_iter_),
            "lower_bound": float(gmm.lower_bound_),
            "n_found": int(labels.max() + 1),
        }
        if len(starts):
            info["start"] = won
            info["start_lower_bounds"] = bounds[1:]
            info["restarts_lower_bound"] = bounds[0]
        if not gmm.converged_:
            info["warning"] = f"GMM did not converge in {p.max_iter} iterations; raise task.max_iter (--set)"
        elif caught:  # the best restart converged, some others did not: said, without contradicting 'converged'
            info["note"] = (f"{len(caught)} of {p.n_init} GMM restarts did not converge in {p.max_iter} iterations "
                            "(the best one did)")
        if info["n_found"] < n_domains:
            few = f"only {info['n_found']} of {n_domains} mixture components received spots"
            info["warning"] = f"{info['warning']}; {few}" if "warning" in info else few
        self.last_info = info
        return labels


class KMeansClustering(Task):
    """Optional PCA → ``KMeans(K, n_init, random_state=seed)``."""

    shapes = {"embedding": "(N, L) float32", "return": "(N,) int64"}

    def __init__(self, params: KMeansParams) -> None:
        super().__init__(params)
        self.last_info: dict[str, Any] = {}

    def run(self, embedding: np.ndarray, n_domains: int, seed: int = 0) -> np.ndarray:
        """Cluster ``embedding`` ``(N, L)`` into ``n_domains`` → int64 labels ``(N,)``."""
        from sklearn.cluster import KMeans

        x = _prepare(embedding, n_domains)
        fit_rows = subsample_rows(len(x), self.params.max_fit, seed)
        x, used_pca = _pca_fit_transform(x, fit_rows, self.params.pca, seed)
        x_fit = x if fit_rows is None else x[fit_rows]
        km = KMeans(n_clusters=int(n_domains), n_init=self.params.n_init, random_state=seed).fit(x_fit)
        labels = relabel_by_size(km.labels_ if fit_rows is None else km.predict(x))
        self.last_info = {"pca": used_pca, "inertia": float(km.inertia_), "n_found": int(labels.max() + 1),
                          "fitted_on": len(x_fit)}
        return labels


class LeidenClustering(Task):
    """Leiden with a resolution search for exactly K clusters.

    Graph: unweighted, symmetrised (union) kNN graph on the embedding (``n_neighbors``, exact Euclidean).
    Search: run at ``resolution_max``; while that gives fewer than K clusters, double it (up to 10 times);
    symmetrically halve ``resolution_min`` while it gives more than K; then bisect for up to ``max_steps``
    steps. If K is never hit, the result closest to K is returned and ``last_info["warning"]`` says so.
    """

    shapes = {"embedding": "(N, L) float32", "return": "(N,) int64"}

    def __init__(self, params: LeidenParams) -> None:
        super().__init__(params)
        self.last_info: dict[str, Any] = {}

    @staticmethod
    def knn_graph(x: np.ndarray, n_neighbors: int):
        """Undirected igraph kNN graph (union of i→j) on rows of ``x`` ``(N, L)``."""
        import igraph as ig
        from sklearn.neighbors import NearestNeighbors

        n = x.shape[0]
        k = min(n_neighbors, n - 1)
        if k < 1:
            return ig.Graph(n=n)
        idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
        rows = np.repeat(np.arange(n, dtype=np.int64), k + 1)
        cols = idx.reshape(-1).astype(np.int64)
        keep = rows != cols
        a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
        key = np.unique(a * n + b)
        edges = np.stack(np.divmod(key, n), axis=1)
        return ig.Graph(n=n, edges=edges.tolist(), directed=False)

    def run(self, embedding: np.ndarray, n_domains: int, seed: int = 0) -> np.ndarray:
        """Cluster ``embedding`` ``(N, L)`` into ``n_domains`` → int64 labels ``(N,)``."""
        import leidenalg

        p = self.params
        x_all = _prepare(embedding, n_domains)
        fit_rows = subsample_rows(len(x_all), p.max_fit, seed)
        x = x_all if fit_rows is None else x_all[fit_rows]
        k_target = int(n_domains)
        graph = self.knn_graph(x, p.n_neighbors)
        tried: dict[float, np.ndarray] = {}

        def leiden(res: float) -> int:
            if res not in tried:
                part = leidenalg.find_partition(
                    graph,
                    leidenalg.RBConfigurationVertexPartition,
                    resolution_parameter=res,
                    seed=seed,
                    n_iterations=-1,
                )
                tried[res] = np.asarray(part.membership, dtype=np.int64)
            return int(tried[res].max() + 1)

        lo, hi = p.resolution_min, p.resolution_max
        found: float | None = None
        steps = 0
        n_hi = leiden(hi)
        while n_hi < k_target and steps < 10:
            lo, hi, steps = hi, hi * 2.0, steps + 1
            n_hi = leiden(hi)
        if n_hi == k_target:
            found = hi
        else:
            n_lo = leiden(lo)
            while n_lo > k_target and steps < 20 and lo > 1e-6:
                hi, lo, steps = lo, lo / 2.0, steps + 1
                n_lo = leiden(lo)
            if n_lo == k_target:
                found = lo
            else:
                for _ in range(p.max_steps):
                    mid = 0.5 * (lo + hi)
                    n_mid = leiden(mid)
                    steps += 1
                    if n_mid == k_target:
                        found = mid
                        break
                    if n_mid < k_target:
                        lo = mid
                    else:
                        hi = mid
                    if hi - lo < 1e-6:
                        break
        if found is None:  # closest count; ties go to the smaller resolution
            found = min(tried, key=lambda r: (abs(int(tried[r].max() + 1) - k_target), r))
        labels = tried[found]
        if fit_rows is not None:
            labels = vote_labels(x, labels, x_all, p.n_neighbors)
        labels = relabel_by_size(labels)
        n_found = int(labels.max() + 1)
        info: dict[str, Any] = {
            "fitted_on": len(x),
            "resolution": float(found),
            "n_found": n_found,
            "evaluations": len(tried),
            "n_edges": int(graph.ecount()),
        }
        if n_found != k_target:
            info["warning"] = (
                f"Leiden could not reach {k_target} clusters (closest: {n_found} at resolution {found:.4g}); "
                "try GMM clustering or change n_neighbors"
            )
        self.last_info = info
        return labels
