"""The HEST-Benchmark baseline: ridge regression on a PCA of frozen tile embeddings.

As in mahmoodlab/HEST (``train_test_reg``): StandardScaler → PCA(256) fitted on the training embeddings,
then ridge with ``alpha = 100 / (n_features · n_targets)``. HEST fits without intercept; because the PCA
scores are centred on the training set, fitting an intercept gives the same slopes (so the same Pearson r)
and sensible absolute values, so we fit one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def pooled_features(image_encoder: nn.Module, tiles: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Frozen pooled features ``(N, D)`` float32 of uint8 tiles ``(N, 3, S, S)`` (eval mode, no augmentation)."""
    was = image_encoder.training
    image_encoder.eval()
    t = torch.as_tensor(tiles)
    out = [image_encoder(t[i:i + batch_size])["pooled"].float().cpu() for i in range(0, len(t), batch_size)]
    image_encoder.train(was)
    return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)


def hest_ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_components: int = 256,
               seed: int = 0) -> tuple[np.ndarray, dict]:
    """Fit scaler + PCA + ridge on ``x_train (N, D)`` → ``y_train (N, G)``; predict ``(M, G)`` for ``x_test``.

    Returns the predictions and a dict describing the fit (components kept, alpha).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(n_components, x_train.shape[0], x_train.shape[1]))
    pipe = Pipeline([("scaler", StandardScaler()), ("pca", PCA(n_components=k, random_state=seed))])
    z_train = pipe.fit_transform(x_train.astype(np.float64))
    z_test = pipe.transform(x_test.astype(np.float64))
    alpha = 100.0 / (z_train.shape[1] * y_train.shape[1])
    reg = Ridge(alpha=alpha, solver="lsqr", fit_intercept=True, max_iter=1000, random_state=seed)
    reg.fit(z_train, y_train.astype(np.float64))
    return reg.predict(z_test).astype(np.float32), {"pca_components": k, "alpha": alpha}


# --------------------------------------------------------------------------- honest baselines
#: Ridge penalties searched by cross-validation over the training sections (log grid, wide on purpose).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
#: Neighbour counts searched for the nearest-neighbour predictor.
KNN_K = (5, 10, 25, 50, 100)


def mean_predictor(y_train: np.ndarray, n_test: int) -> tuple[np.ndarray, dict]:
    """The training mean of every target for every held-out spot ``(n_test, G)``: the floor any method must beat."""
    return np.repeat(y_train.mean(0, keepdims=True), n_test, axis=0).astype(np.float32), {}


def _group_folds(groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-training-section-out splits (a single section: 5 contiguous blocks of its spots)."""
    uniq = np.unique(groups)
    if len(uniq) >= 2:
        return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in uniq]
    idx = np.arange(len(groups))
    return [(np.setdiff1d(idx, part), part) for part in np.array_split(idx, 5)]


def _standard_pca(x_train: np.ndarray, x_test: np.ndarray, n_components: int | None, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list = [("scaler", StandardScaler())]
    if n_components is not None and n_components < min(x_train.shape):
        steps.append(("pca", PCA(n_components=n_components, random_state=seed)))
    pipe = Pipeline(steps)
    return pipe.fit_transform(x_train.astype(np.float64)), pipe.transform(x_test.astype(np.float64))


def cv_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_components: int | None = None,
             seed: int = 0) -> float:
    """The ridge penalty among :data:`RIDGE_ALPHAS` with the least leave-one-training-section-out squared error
    (over all targets), on standardised (+ PCA to *n_components*) features fitted inside each split."""
    from sklearn.linear_model import Ridge

    errs = np.zeros(len(RIDGE_ALPHAS))
    for tr, va in _group_folds(groups):
        z_tr, z_va = _standard_pca(x[tr], x[va], n_components, seed)
        for i, a in enumerate(RIDGE_ALPHAS):
            pred = Ridge(alpha=a).fit(z_tr, y[tr]).predict(z_va)
            errs[i] += float(((pred - y[va]) ** 2).sum())
    return RIDGE_ALPHAS[int(np.argmin(errs))]


def ridge_cv(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, groups: np.ndarray,
             n_components: int | None = 256, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Scaler (+ PCA) + ridge whose penalty is chosen by leave-one-training-section-out CV (mean-squared error
    over all targets) among :data:`RIDGE_ALPHAS`; the held-out section is never seen by the choice."""
    from sklearn.linear_model import Ridge

    alpha = cv_alpha(x_train, y_train, groups, n_components, seed)
    z_train, z_test = _standard_pca(x_train, x_test, n_components, seed)
    pred = Ridge(alpha=alpha).fit(z_train, y_train.astype(np.float64)).predict(z_test)
    return pred.astype(np.float32), {"alpha": alpha, "alphas_searched": [RIDGE_ALPHAS[0], RIDGE_ALPHAS[-1]],
                                     "features": int(z_train.shape[1]), "cv": "leave one training section out"}


def knn_predictor(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, groups: np.ndarray,
                  n_components: int | None = 256, seed: int = 0) -> tuple[np.ndarray, dict]:
    """BLEEP-style: the mean expression of the ``k`` training spots nearest in (standardised, PCA) image-feature
    space (cosine), ``k`` chosen by leave-one-training-section-out CV among :data:`KNN_K`."""
    from sklearn.neighbors import NearestNeighbors

    def predict(z_tr: np.ndarray, y_tr: np.ndarray, z_q: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
        kmax = min(max(ks), len(z_tr))
        _, idx = NearestNeighbors(n_neighbors=kmax, metric="cosine").fit(z_tr).kneighbors(z_q)
        return {k: y_tr[idx[:, : min(k, kmax)]].mean(1) for k in ks}

    errs = dict.fromkeys(KNN_K, 0.0)
    for tr, va in _group_folds(groups):
        z_tr, z_va = _standard_pca(x_train[tr], x_train[va], n_components, seed)
        for k, pred in predict(z_tr, y_train[tr], z_va, KNN_K).items():
            errs[k] += float(((pred - y_train[va]) ** 2).sum())
    k = min(errs, key=errs.get)
    z_train, z_test = _standard_pca(x_train, x_test, n_components, seed)
    return predict(z_train, y_train, z_test, (k,))[k].astype(np.float32), {"k": k, "metric": "cosine",
                                                                            "cv": "leave one training section out"}
