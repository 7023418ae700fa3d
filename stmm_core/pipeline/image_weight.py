"""Automatic image weight: how much the image features should count in the fusion, from the data alone.

The rule (``fusion.img_weight = "auto"``) measures two label-free things and decides on the second:

1. **Is the image as spatially coherent as the expression?** Moran's I of the leading principal components of
   each modality on the spatial graph (variance-weighted over the first 5); the score is the ratio
   ``I_image / I_gene``. Tissue domains are spatially coherent in both modalities; image features dominated by
   texture noise, tile jitter or a random encoder are less coherent than the expression.
2. **Does the image predict the expression signal of spots it has not seen?** A ridge regression from the
   image features to the gene features under **spatially blocked** cross-validation (a 6 × 6 grid of blocks,
   whole blocks held out, so neighbouring spots cannot leak smooth signal), its penalty chosen inside each
   training part only (GCV, :class:`sklearn.linear_model.RidgeCV`); held-out R² pooled over the gene-feature
   dimensions (variance-weighted), divided by the expression's own spatial predictability (R² of each gene
   feature from the mean of its graph neighbours), i.e. the share of the spatially structured expression
   signal the image predicts. A smooth but unrelated image (a lighting gradient) fails this test.

The image is fused at full weight when it predicts enough of the expression's spatial signal, and left out
otherwise (a 0-or-1 rule)::

    w = w_on   if  R²/R²_spatial ≥ p_min   else 0

Why 0-or-1: on the tuning section (DLPFC 151676, feature-level informative-image bench) small weights hurt
(a weight of 0.08 at signal ratio 0.5 cost 0.09 ARI) while weight 1 gained +0.40 ARI already at ratio 0.25, where
the earlier graded rule gave 0. Why these thresholds: on 151676 the prediction ratio of the section's own
(uninformative) image features is 0.54–0.56 and that of every informative bench image 0.76–0.78 (from ratio 0.25
up), so ``p_min = 0.65`` sits in the middle of the gap. The coherence ratio does not separate them (0.69–0.73 vs
0.77–0.97) and is reported but not used: a floor on it (0.6) left out a painted texture whose tiles the encoder
does separate (end-to-end bench on 151676, strength 1: coherence ratio 0.37 — the leading components of the
image features follow the stripes' phase within each tile, not the layers — prediction ratio 0.66, and weight 1
gives ARI 0.985 against 0.562 without the image). Evidence, threshold and the margin ``R²/R²_spatial − p_min``
go to the evidence dict.

At ``w = 0`` the pipeline leaves the image out entirely (with weight 0 it would still enter through
cross-attention). All figures go to ``metrics.json`` (``info.image_weight``) and the printed summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Threshold of the 0-or-1 rule, chosen on DLPFC 151676 (its real features, the feature-level informative-image
#: bench ``benchmarks/image_signal.py`` and the painted-texture bench ``benchmarks/image_signal_painted.py``) and
#: confirmed on 151675 and HER2ST A1 (benchmarks/RESULTS.md).
PREDICTION_MIN = 0.65
W_ON = 1.0


def rule_weight(prediction_ratio: float, *, w_on: float = W_ON, prediction_min: float = PREDICTION_MIN) -> float:
    """The weight the rule gives for a prediction ratio (``w_on`` or 0)."""
    return float(w_on) if prediction_ratio >= prediction_min else 0.0


def rule_text(w_on: float = W_ON, prediction_min: float = PREDICTION_MIN) -> str:
    return f"w = {w_on:g} if R2/R2_spatial >= {prediction_min:g}, else 0 (image left out)"


def block_folds(coords: np.ndarray, n_folds: int = 5, grid: int = 6, seed: int = 0) -> np.ndarray:
    """Fold id ``(N,)`` in ``[0, n_folds)``: spots binned into a ``grid × grid`` lattice of spatial blocks over
    their bounding box, whole blocks dealt to folds in a seeded random order (balanced by block count)."""
    c = np.asarray(coords, dtype=np.float64)
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    cell = np.minimum((((c - lo) / span) * grid).astype(np.int64), grid - 1)
    block = cell[:, 0] * grid + cell[:, 1]
    used = np.unique(block)
    order = np.random.default_rng(seed).permutation(len(used))
    fold_of_block = {int(b): int(i % n_folds) for b, i in zip(used[order], range(len(used)))}
    return np.array([fold_of_block[int(b)] for b in block], dtype=np.int64)


def blocked_cv_r2(x: np.ndarray, y: np.ndarray, coords: np.ndarray, *, n_folds: int = 5, seed: int = 0) -> float:
    """Held-out R² of a ridge ``x → y`` (all columns of ``y`` pooled, variance-weighted) under spatially blocked
    CV; the penalty is chosen by GCV inside each training part (never sees the held-out block)."""
    from sklearn.linear_model import RidgeCV

    folds = block_folds(coords, n_folds=n_folds, seed=seed)
    alphas = np.logspace(-2, 5, 15)
    sse = 0.0
    sst = 0.0
    for f in np.unique(folds):
        test = folds == f
        train = ~test
        if train.sum() < 10 or test.sum() < 2:
            continue
        model = RidgeCV(alphas=alphas).fit(x[train], y[train])
        pred = model.predict(x[test])
        sse += float(((y[test] - pred) ** 2).sum())
        sst += float(((y[test] - y[train].mean(0)) ** 2).sum())  # the training mean is the null predictor
    return 1.0 - sse / sst if sst > 0 else 0.0


def morans_i(values: np.ndarray, edge_index: np.ndarray, n: int) -> np.ndarray:
    """Moran's I of each column of ``values`` ``(N, k)`` on a graph (binary, row-standardised weights)."""
    src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    deg = np.bincount(dst, minlength=n).astype(np.float64)
    z = values - values.mean(0, keepdims=True)
    w = 1.0 / np.maximum(deg[dst], 1.0)
    lag = np.zeros_like(z, dtype=np.float64)
    np.add.at(lag, dst, z[src] * w[:, None])
    denom = (z**2).sum(0)
    s0 = float((deg > 0).sum())  # row-standardised: every node with neighbours contributes weight 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (n / max(s0, 1.0)) * (z * lag).sum(0) / denom
    return np.nan_to_num(out)


def _coherence(x: np.ndarray, edge_index: np.ndarray, k: int) -> float:
    """Variance-weighted Moran's I of the first ``k`` principal components of ``x``."""
    xc = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    k = min(k, len(s))
    pcs = u[:, :k] * s[:k]
    var = s[:k] ** 2
    return float((morans_i(pcs, edge_index, x.shape[0]) * var).sum() / var.sum()) if var.sum() > 0 else 0.0


def spatial_r2(x: np.ndarray, edge_index: np.ndarray) -> float:
    """Share of the variance of ``x``'s columns predicted from their graph-neighbour means (per-column slope),
    pooled over columns: the spatially structured part of a modality (noise independent across spots is not
    predicted)."""
    src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    n = x.shape[0]
    deg = np.bincount(dst, minlength=n).astype(np.float64)
    y = x - x.mean(0, keepdims=True)
    lag = np.zeros_like(y)
    np.add.at(lag, dst, y[src] / np.maximum(deg[dst], 1.0)[:, None])
    lag -= lag.mean(0, keepdims=True)
    slope = (y * lag).sum(0) / np.maximum((lag * lag).sum(0), 1e-12)
    sst = float((y * y).sum())
    return 1.0 - float(((y - lag * slope) ** 2).sum()) / sst if sst > 0 else 0.0


def auto_image_weight(
    img: np.ndarray,
    gene: np.ndarray,
    coords: np.ndarray,
    edge_index: np.ndarray,
    *,
    w_on: float = W_ON,
    prediction_min: float = PREDICTION_MIN,
    seed: int = 0,
    n_pcs: int = 5,
) -> tuple[float, dict[str, Any]]:
    """The automatic image weight and the evidence for it (see the module docstring).

    Args:
        img: ``(N, D_i)`` image features as the fusion sees them. gene: ``(N, D_g)`` gene features.
        coords: ``(N, 2)`` spot positions (spatial blocks). edge_index: ``(2, E)`` symmetric spatial graph.

    Returns:
        ``(weight, evidence)``; ``evidence`` is JSON-able.
    """
    if not w_on > 0:
        raise ValueError(f"w_on must be > 0, got {w_on}")
    x = np.asarray(img, dtype=np.float64)
    y = np.asarray(gene, dtype=np.float64)
    edge_index = np.asarray(edge_index)
    i_img, i_gene = _coherence(x, edge_index, n_pcs), _coherence(y, edge_index, n_pcs)
    coh = i_img / i_gene if i_gene > 1e-6 else 0.0
    r2 = blocked_cv_r2(x, y, coords, seed=seed) if edge_index.shape[1] > 0 else 0.0
    ceiling = spatial_r2(y, edge_index) if edge_index.shape[1] > 0 else 0.0
    pred = r2 / ceiling if ceiling > 1e-6 else 0.0
    weight = rule_weight(pred, w_on=w_on, prediction_min=prediction_min)
    evidence: dict[str, Any] = {
        "rule": rule_text(w_on, prediction_min),
        "prediction_margin": round(pred - prediction_min, 4),
        "morans_i_image": round(i_img, 4),
        "morans_i_gene": round(i_gene, 4),
        "coherence_ratio": round(coh, 4),
        "cv_r2_image_to_gene": round(r2, 4),
        "spatial_r2_gene": round(ceiling, 4),
        "prediction_ratio": round(pred, 4),
        "cv": "ridge (GCV penalty inside each training part), 5 folds of 6x6 spatial blocks",
    }
    return weight, evidence
