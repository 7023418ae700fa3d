"""Gaussian-mixture starts from given labellings (the embedding-level consensus of seeds).

A labelling of the spots defines a mixture: each label's share (weight), mean and covariance (pooled over the
labels for ``tied``). EM started there climbs to the optimum nearest that labelling; among such starts and the
usual k-means restarts, the fit of highest likelihood is kept (:meth:`GMMClustering.run_with_starts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mixture_start(x: np.ndarray, labels: np.ndarray, k: int, covariance: str,
                  reg: float = 1e-6) -> dict[str, np.ndarray] | None:
    """``weights_init``, ``means_init``, ``precisions_init`` of ``sklearn.mixture.GaussianMixture`` from
    *labels* on the rows of *x* ``(N, D)``; None when the labelling does not have exactly *k* labels of at
    least two rows each."""
    _, lab, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    lab = lab.reshape(-1)
    if len(counts) != k or counts.min() < 2:
        return None
    d = x.shape[1]
    onehot = np.zeros((len(x), k))
    onehot[np.arange(len(x)), lab] = 1.0
    means = (onehot.T @ x) / counts[:, None]
    resid = x - means[lab]
    if covariance == "tied":
        prec: Any = np.linalg.inv(resid.T @ resid / len(x) + reg * np.eye(d))
    elif covariance == "full":
        prec = np.stack([np.linalg.inv(np.cov(resid[lab == j].T, bias=True).reshape(d, d) + reg * np.eye(d))
                         for j in range(k)])
    elif covariance == "diag":
        prec = 1.0 / ((onehot.T @ resid ** 2) / counts[:, None] + reg)
    else:  # spherical
        prec = 1.0 / ((onehot.T @ (resid ** 2).mean(axis=1)) / counts + reg)
    return {"weights_init": counts / counts.sum(), "means_init": means, "precisions_init": prec}
