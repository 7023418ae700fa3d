"""Gene features: library-size normalisation → log1p → highly variable genes → z-score (→ PCA).

What changed from StereoMM's RNA features (``seeds-spec.md`` A1):

* the counts are library-size normalised and log-transformed first (published: whatever was in ``adata.X``,
  usually raw counts, was ranked by raw variance - which picks the most highly *expressed* genes);
* HVGs are ranked with scanpy's ``highly_variable_genes`` (``seurat`` / ``cell_ranger`` normalised dispersion) on
  the log-normalised data, or by plain variance of the log-normalised values (``flavor="variance"``); exactly
  ``n_top_genes`` genes are kept (ties broken by gene order), all of them when the section has fewer;
  ``flavor="moran"`` ranks them by spatial autocorrelation instead (Moran's I on a 6-NN graph of the spots,
  :mod:`stmm_genes.moran`);
* genes are selected **by name** when transforming another section (published: by column position); a section
  lacking fitted genes is a :class:`~stmm_core.errors.DataError`, never a silent misalignment;
* the z-score statistics are learned once (``fit``) and reused (``transform``), zero-variance genes get std 1
  (no NaN), z-scores are clipped to ``±max_value``;
* dense and sparse inputs both work; output is float32 (published: float64 tensors);
* gene and image feature widths are independent (published: both had to be 2048).

Fitted state (:meth:`HVGGeneEncoder.state`) is a JSON-able dict: parameters, selected gene names, the target
sum, the per-gene means/stds and the PCA basis, so a fitted preprocessor can be saved next to a model and
applied to new sections bit-identically.

Memory: nothing of size spots × genes is ever dense except the output itself. The counts stay sparse through
normalisation and HVG ranking; with ``pca`` set, the z-scored matrix is formed one block of rows at a time
(:data:`BLOCK_BYTES`). The PCA uses the solver scikit-learn's ``PCA`` would choose for the shape, so results
are those of the former dense code up to rounding: exact axes from the covariance (float64 Gram matrix
accumulated over blocks, genes × genes) for tall-and-narrow or small matrices, and otherwise scikit-learn's
randomised SVD with the same random draws, run on an operator that rebuilds each block when multiplied
(~16 passes over the sparse data). Transforming projects block by block into the ``(N, pca)`` output. At 1M
spots × 2000 genes that is ~64 MB of blocks instead of an 8 GB dense matrix plus the PCA's copies of it.

Notes: the HVG ranking always uses ``log1p`` of the normalised counts (what the dispersion flavours expect);
``log1p=False`` only changes the output features. The library size of a spot is its total over *all* genes of
the section it comes from, so sections measured on different gene panels get different normalisations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import DataError
from stmm_core.interfaces import GeneEncoder

from .params import HVGParams

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

    from stmm_core.data.section import Section

STATE_FORMAT = "stmm.genes.hvg/1"
_EPS_STD = 1e-8
#: Size of one dense block of z-scored rows (float64 while fitting the PCA).
BLOCK_BYTES = 1 << 26


def _counts(section: "Section") -> "sp.csr_matrix":
    """The section's counts as CSR float32, checked for shape and finiteness."""
    import scipy.sparse as sp

    X = section.counts
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    n_names = len(section.gene_names)
    if X.shape[1] != n_names:
        raise DataError(
            f"section {section.name!r}: counts have {X.shape[1]} columns but there are {n_names} gene names"
        )
    if X.nnz and not np.isfinite(X.data).all():
        raise DataError(f"section {section.name!r}: counts contain NaN/inf; fix the input matrix")
    if X.nnz and X.data.min() < 0:
        raise DataError(
            f"section {section.name!r}: counts are negative (already scaled?); the gene encoder needs raw counts"
        )
    return X


def _gene_names(section: "Section") -> list[str]:
    names = [str(g) for g in section.gene_names]
    if len(set(names)) != len(names):
        import collections

        dup = [g for g, c in collections.Counter(names).items() if c > 1]
        raise DataError(
            f"section {section.name!r}: {len(dup)} gene names are duplicated (e.g. {', '.join(dup[:3])}); "
            "make them unique (AnnData.var_names_make_unique(); the CLI readers: --unique-ids)"
        )
    return names


def _library_scale(X: "sp.csr_matrix", target_sum: float) -> np.ndarray:
    """Per-spot factor ``target_sum / library size`` (0 for empty spots), float64 ``(N,)``."""
    lib = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    scale = np.zeros_like(lib)
    nz = lib > 0
    scale[nz] = target_sum / lib[nz]
    return scale


def _normalise(X: "sp.csr_matrix", scale: np.ndarray, log1p: bool) -> "sp.csr_matrix":
    """Rows of *X* times *scale*, then log1p (sparse CSR float32; one copy of *X*)."""
    Y = X.astype(np.float32, copy=True)
    Y.data *= np.repeat(scale.astype(np.float32), np.diff(Y.indptr))
    if log1p:
        np.log1p(Y.data, out=Y.data)
    return Y


def _column_mean_var(Y: "sp.csr_matrix") -> tuple[np.ndarray, np.ndarray]:
    """Column mean and (population) variance of a sparse matrix, float64, without densifying or copying it
    (the non-zeros are summed per column in chunks)."""
    n, g = Y.shape
    total, sq = np.zeros(g), np.zeros(g)
    step = 1 << 22
    for lo in range(0, Y.nnz, step):
        d = Y.data[lo: lo + step].astype(np.float64)
        j = Y.indices[lo: lo + step]
        total += np.bincount(j, weights=d, minlength=g)
        sq += np.bincount(j, weights=d * d, minlength=g)
    mean = total / n
    var = sq / n - mean**2
    return mean, np.maximum(var, 0.0)


def _regress_out_depth(features: np.ndarray, library: np.ndarray) -> np.ndarray:
    """``features`` ``(N, D)`` minus their least-squares fit on ``[1, log library]`` (float32, same shape)."""
    design = np.stack([np.ones(len(library)), np.log(np.maximum(library, 1.0))], 1)
    coef, *_ = np.linalg.lstsq(design, features.astype(np.float64), rcond=None)
    return (features - design @ coef).astype(np.float32)


def _top_k(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the *k* highest scores (NaN lowest, ties by position), returned in ascending order."""
    s = np.where(np.isfinite(score), score, -np.inf)
    order = np.argsort(-s, kind="stable")[:k]
    return np.sort(order)


class HVGGeneEncoder(GeneEncoder):
    """Raw counts → float32 ``(N, out_dim)``: HVG expression, z-scored (or its PCA).

    ``out_dim`` = number of selected genes (``min(n_top_genes, G)``), or the number of PCA components.
    """

    def __init__(self, params: HVGParams | None = None) -> None:
        super().__init__(params if params is not None else HVGParams())
        self.genes: list[str] | None = None
        self.target_sum: float | None = None
        self.mean: np.ndarray | None = None  # float64 (n_genes,)
        self.std: np.ndarray | None = None  # float64 (n_genes,)
        self.pca_components: np.ndarray | None = None  # float64 (k, n_genes)
        self.pca_mean: np.ndarray | None = None  # float64 (n_genes,)
        self.info: dict[str, Any] = {}

    # -- shape -----------------------------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.genes is not None

    @property
    def out_dim(self) -> int:  # type: ignore[override]
        if self.genes is None:
            raise RuntimeError("HVGGeneEncoder.out_dim is known after fit() or load_state()")
        return int(self.pca_components.shape[0]) if self.pca_components is not None else len(self.genes)

    # -- fit / transform -------------------------------------------------------------------------------------

    def fit(self, section: "Section") -> "HVGGeneEncoder":
        p = self.params
        X = _counts(section)
        names = _gene_names(section)
        n_spots, n_genes = X.shape
        if n_spots < 2 or n_genes < 1:
            raise DataError(f"section {section.name!r} has {n_spots} spots and {n_genes} genes; need >= 2 spots")

        lib = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        if p.target_sum is not None:
            target = float(p.target_sum)
        else:
            positive = lib[lib > 0]
            if positive.size == 0:
                raise DataError(f"section {section.name!r}: every spot has zero counts")
            target = float(np.median(positive))
        scale = _library_scale(X, target)
        logn = _normalise(X, scale, log1p=True)  # the HVG ranking always uses log-normalised values

        k = min(int(p.n_top_genes), n_genes)
        if k >= n_genes:
            idx = np.arange(n_genes)
        elif p.flavor == "variance":
            _, var = _column_mean_var(logn)
            idx = _top_k(var, k)
        elif p.flavor == "seurat_v3":  # on the raw counts, as scanpy's seurat_v3 (no scikit-misc needed)
            from stmm_genes.seurat_v3 import seurat_v3_variances

            idx = _top_k(seurat_v3_variances(X), k)
        elif p.flavor == "moran":  # spatially variable: Moran's I on a 6-NN graph of the spots
            from stmm_genes.moran import morans_i

            idx = _top_k(morans_i(logn, section.coords), k)
        else:
            idx = self._scanpy_hvg(logn, names, k, p.flavor)
        self.genes = [names[i] for i in idx]
        self.target_sum = target

        if p.log1p:
            Y = logn if len(idx) == n_genes else logn[:, idx]  # all genes kept: no copy
        else:
            Y = _normalise(X[:, idx], scale, log1p=False)
        del logn
        if p.scale in ("zscore", "std"):
            mean, var = _column_mean_var(Y)
            if p.scale == "std":  # no centring; sample std as scanpy's scale(zero_center=False)
                var = var * n_spots / max(n_spots - 1, 1)
                mean = np.zeros(len(idx))
            std = np.sqrt(var)
            std[std < _EPS_STD] = 1.0
        else:
            mean = np.zeros(len(idx))
            std = np.ones(len(idx))
        self.mean, self.std = mean, std
        self.pca_components = self.pca_mean = None
        self.info = {"n_spots": int(n_spots), "n_genes_in": int(n_genes), "n_selected": len(idx),
                     "flavor": p.flavor if k < n_genes else "all", "target_sum": target}
        if p.pca is not None:
            n_comp = int(min(p.pca, n_spots, len(idx)))
            if n_comp < p.pca:
                import warnings

                warnings.warn(f"gene.pca={p.pca} is more than the {min(n_spots, len(idx))} genes/spots available: "
                              f"{n_comp} components are used (set --set gene.pca={n_comp} to silence this)",
                              stacklevel=2)
            comps, pmean, ratio = self._fit_pca(Y, n_comp)
            self.pca_components, self.pca_mean = comps, pmean
            self.info["pca_components"] = n_comp
            self.info["pca_explained_variance_ratio"] = ratio
        return self

    def _fit_pca(self, Y: "sp.csr_matrix", n_comp: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Principal axes ``(k, G)``, mean ``(G,)`` and explained variance ratio of the z-scored *Y*, with the
        solver scikit-learn's ``PCA(svd_solver="auto", random_state=0)`` picks for that shape - without
        forming the z-scored matrix: exact (covariance eigendecomposition) where it is exact, its randomised
        SVD (same random draws, same power iterations) on an implicit, row-blocked operator where it is
        randomised. Signs as scikit-learn's ``svd_flip``: the largest entry of each axis positive."""
        n, g = Y.shape
        total, sq, gram = np.zeros(g), np.zeros(g), None
        exact = (g <= 1000 and n >= 10 * g) or max(n, g) <= 500 or not 1 <= n_comp < 0.8 * min(n, g)
        if exact:
            gram = np.zeros((g, g))
        for Z in self._scaled_blocks(Y, 8):
            Z = Z.astype(np.float64)
            total += Z.sum(axis=0)
            if gram is not None:
                gram += Z.T @ Z
            else:
                sq += np.einsum("ij,ij->j", Z, Z)
        mean = total / n
        if gram is not None:
            cov = (gram - n * np.outer(mean, mean)) / max(n - 1, 1)
            cov = (cov + cov.T) / 2
            var_total = float(np.clip(np.diag(cov), 0, None).sum())
            evals, evecs = np.linalg.eigh(cov)
            order = np.argsort(evals)[::-1][:n_comp]
            comps = np.ascontiguousarray(evecs[:, order].T)
            explained = np.clip(evals[order], 0, None)
        else:
            var_total = float(np.clip(sq - n * mean**2, 0, None).sum() / max(n - 1, 1))
            comps, svals = self._randomized_axes(Y, mean, n_comp)
            explained = svals.astype(np.float64) ** 2 / max(n - 1, 1)
        pivot = np.argmax(np.abs(comps), axis=1)
        comps = comps * np.sign(comps[np.arange(len(comps)), pivot])[:, None]
        ratio = float(explained.sum() / var_total) if var_total > 0 else 0.0
        return comps.astype(np.float64), mean, ratio

    def _randomized_axes(self, Y: "sp.csr_matrix", mean: np.ndarray, n_comp: int) -> tuple[np.ndarray, np.ndarray]:
        """Right singular vectors ``(k, G)`` and singular values of the centred z-scores (float32, as
        scikit-learn's PCA on float32 data), by randomised SVD over an operator that rebuilds row blocks."""
        from scipy.sparse.linalg import LinearOperator
        from sklearn.utils import extmath

        svd = getattr(extmath, "_randomized_svd", extmath.randomized_svd)
        n, g = Y.shape
        mu = mean.astype(np.float32)[None, :]
        one_block = n * g * 4 <= BLOCK_BYTES
        cached = list(self._scaled_blocks(Y, 4)) if one_block else None

        def blocks():
            return iter(cached) if cached is not None else self._scaled_blocks(Y, 4)

        def matmat(q: np.ndarray) -> np.ndarray:
            q = np.asarray(q, dtype=np.float32).reshape(g, -1)
            return np.concatenate([Z @ q for Z in blocks()], 0) - mu @ q

        def rmatmat(q: np.ndarray) -> np.ndarray:
            q = np.asarray(q, dtype=np.float32).reshape(n, -1)
            out = np.zeros((g, q.shape[1]), dtype=np.float32)
            lo = 0
            for Z in blocks():
                out += Z.T @ q[lo: lo + len(Z)]
                lo += len(Z)
            return out - mu.T @ q.sum(axis=0)[None, :]

        op = LinearOperator(shape=(n, g), dtype=np.float32, matvec=matmat, matmat=matmat,
                            rmatvec=rmatmat, rmatmat=rmatmat)
        _, svals, vt = svd(op, n_components=n_comp, n_oversamples=10, n_iter="auto",
                           power_iteration_normalizer="auto", flip_sign=False, random_state=0)
        return np.asarray(vt, dtype=np.float64), np.asarray(svals)

    def transform(self, section: "Section") -> np.ndarray:
        if self.genes is None:
            raise RuntimeError("HVGGeneEncoder.transform() called before fit() or load_state()")
        X = _counts(section)
        names = _gene_names(section)
        where = {g: i for i, g in enumerate(names)}
        missing = [g for g in self.genes if g not in where]
        if missing:
            raise DataError(
                f"section {section.name!r} lacks {len(missing)} of the {len(self.genes)} genes the gene encoder "
                f"was fitted on (e.g. {', '.join(missing[:5])}); use sections measured on the same gene panel, or "
                "fit on their shared genes"
            )
        idx = np.fromiter((where[g] for g in self.genes), dtype=np.int64, count=len(self.genes))
        scale = _library_scale(X, float(self.target_sum))  # library size over all genes of this section
        Y = _normalise(X[:, idx], scale, log1p=self.params.log1p)
        if self.pca_components is None:
            out = np.ascontiguousarray(self._scaled(Y), dtype=np.float32)
        else:
            comps_t = self.pca_components.T.astype(np.float32)
            pmean = self.pca_mean.astype(np.float32)
            out = np.empty((Y.shape[0], comps_t.shape[1]), dtype=np.float32)
            lo = 0
            for Z in self._scaled_blocks(Y, 4):  # never the whole (N, genes) matrix
                out[lo: lo + len(Z)] = (Z - pmean) @ comps_t
                lo += len(Z)
        if self.params.regress_depth:
            out = _regress_out_depth(out, np.asarray(X.sum(axis=1, dtype=np.float64)).ravel())
        return out

    def _scaled_blocks(self, Y: "sp.csr_matrix", itemsize: int):
        """:meth:`_scaled` of consecutive row blocks of *Y*, each about :data:`BLOCK_BYTES` at *itemsize*."""
        rows = max(1, BLOCK_BYTES // max(itemsize * Y.shape[1], 1))
        for lo in range(0, Y.shape[0], rows):
            yield self._scaled(Y[lo: lo + rows])

    def _scaled(self, Y: "sp.csr_matrix") -> np.ndarray:
        """Dense float32 z-scores (clipped) of the rows of *Y*."""
        Z = Y.toarray().astype(np.float32, copy=False)
        if self.params.scale in ("zscore", "std"):
            if self.params.scale == "zscore":
                Z -= self.mean.astype(np.float32)
            Z /= self.std.astype(np.float32)
            if self.params.max_value is not None:
                np.clip(Z, -self.params.max_value, self.params.max_value, out=Z)
        return Z

    @staticmethod
    def _scanpy_hvg(logn: "sp.csr_matrix", names: list[str], k: int, flavor: str) -> np.ndarray:
        """Rank genes with scanpy's ``highly_variable_genes`` (normalised dispersion), keep exactly *k*."""
        import warnings

        import anndata as ad
        import pandas as pd

        from stmm_core.errors import require

        sc = require("scanpy", "HVG selection (flavor seurat / cell_ranger)")
        adata = ad.AnnData(X=logn, var=pd.DataFrame(index=pd.Index(names, dtype=str)))
        adata.uns["log1p"] = {"base": None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=k,
                                             inplace=False)
        return _top_k(np.asarray(df["dispersions_norm"], dtype=np.float64), k)

    # -- persistence -----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The fitted preprocessor as a JSON-able dict (floats kept at full precision)."""
        if self.genes is None:
            raise RuntimeError("HVGGeneEncoder.state() called before fit()")
        return {
            "format": STATE_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "genes": list(self.genes),
            "target_sum": float(self.target_sum),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "pca_components": None if self.pca_components is None else self.pca_components.tolist(),
            "pca_mean": None if self.pca_mean is None else [float(v) for v in self.pca_mean],
        }

    def load_state(self, state: dict[str, Any]) -> "HVGGeneEncoder":
        """Restore a state written by :meth:`state` (its parameters replace this encoder's)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise DataError(
                f"not a fitted HVG gene encoder state (format {found!r}, expected {STATE_FORMAT!r}); re-fit the pipeline"
            )
        try:
            params = type(self.params).model_validate(state["params"])
            genes = [str(g) for g in state["genes"]]
            mean = np.asarray(state["mean"], dtype=np.float64)
            std = np.asarray(state["std"], dtype=np.float64)
            comps = state.get("pca_components")
            comps = None if comps is None else np.asarray(comps, dtype=np.float64).reshape(-1, len(genes))
            pmean = state.get("pca_mean")
            pmean = None if pmean is None else np.asarray(pmean, dtype=np.float64)
            target = float(state["target_sum"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt HVG gene encoder state ({exc}); re-fit the pipeline") from None
        if mean.shape != (len(genes),) or std.shape != (len(genes),) or (
            comps is not None and (pmean is None or pmean.shape != (len(genes),))
        ):
            raise DataError("corrupt HVG gene encoder state (array lengths differ from the gene list); re-fit")
        self.params = params
        self.genes, self.target_sum, self.mean, self.std = genes, target, mean, std
        self.pca_components, self.pca_mean = comps, pmean
        return self
