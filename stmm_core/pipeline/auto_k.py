"""Choosing the number of domains without labels (``-k auto``).

Criterion: the Bayesian information criterion (BIC) of the same model the default ``gmm`` task fits — a Gaussian
mixture with one shared (tied) covariance on the first principal components of the embedding — for every K in
a range, and the **knee** of that curve: the K whose BIC lies farthest below the straight line joining the BIC of
the smallest and the largest K (the point of diminishing returns, as in "Kneedle", Satopää et al. 2011). On
smooth graph embeddings the BIC itself keeps falling up to the largest K tried (measured on DLPFC: it would
always pick the top of the range), so its minimum is reported but not used. The silhouette width of each K's
partition is reported beside it (not used), so a user can see how clear-cut the choice was. Everything is
seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: K range tried by ``-k auto`` (inclusive).
K_MIN, K_MAX = 2, 15

CRITERION = ("knee of the BIC curve of a tied-covariance Gaussian mixture on PCA-{pca} of the embedding, "
             "K = {lo}..{hi}: the K farthest below the line joining the end points")


def choose_n_domains(embedding: np.ndarray, seed: int = 0, *, k_min: int = K_MIN, k_max: int = K_MAX,
                     pca: int = 20, max_fit: int = 20_000, n_init: int = 2) -> tuple[int, dict[str, Any]]:
    """The chosen K and a report ``{"criterion", "chosen", "candidates": [{"k", "bic", "silhouette"}]}``."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    x = np.asarray(embedding, dtype=np.float64)
    n = len(x)
    k_max = max(k_min, min(k_max, n - 1))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=max_fit, replace=False)) if n > max_fit else np.arange(n)
    width = min(pca, x.shape[1], len(rows))
    z = PCA(n_components=width, random_state=seed).fit(x[rows]).transform(x[rows]) if width < x.shape[1] else x[rows]
    sil_idx = np.arange(len(rows)) if len(rows) <= 3000 else np.sort(rng.choice(len(rows), size=3000, replace=False))
    candidates = []
    for k in range(k_min, k_max + 1):
        gmm = GaussianMixture(n_components=k, covariance_type="tied", n_init=n_init, max_iter=300, reg_covar=1e-6,
                              random_state=seed).fit(z)
        lab = gmm.predict(z)
        sil = None
        if len(set(lab[sil_idx])) > 1:
            sil = float(silhouette_score(z[sil_idx], lab[sil_idx]))
        candidates.append({"k": k, "bic": float(gmm.bic(z)), "silhouette": sil})
    ks = np.array([c["k"] for c in candidates], dtype=float)
    bic = np.array([c["bic"] for c in candidates])
    if len(ks) > 2:
        chord = bic[0] + (bic[-1] - bic[0]) * (ks - ks[0]) / (ks[-1] - ks[0])
        below = chord - bic  # > 0: below the chord
        for c, b in zip(candidates, below):
            c["below_chord"] = float(b)
        chosen = int(ks[int(np.argmax(below))]) if below.max() > 0 else int(ks[int(np.argmin(bic))])
    else:
        chosen = int(ks[int(np.argmin(bic))])
    report = {"criterion": CRITERION.format(pca=width, lo=k_min, hi=k_max), "chosen": chosen,
              "lowest_bic_k": int(ks[int(np.argmin(bic))]), "candidates": candidates,
              "fitted_on": int(len(rows)), "restarts": n_init}
    return chosen, report


def candidates_line(report: dict[str, Any]) -> str:
    """``K=5 (BIC 1.2e4, sil 0.21) ...`` for the printed summary, the chosen one starred."""
    parts = []
    for c in report["candidates"]:
        star = "*" if c["k"] == report["chosen"] else ""
        sil = f", sil {c['silhouette']:.2f}" if c.get("silhouette") is not None else ""
        parts.append(f"{c['k']}{star} (BIC {c['bic']:.4g}{sil})")
    return "; ".join(parts)
