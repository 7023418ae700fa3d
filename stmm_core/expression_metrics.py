"""Expression-prediction and retrieval metrics (numpy only), with undefined cases excluded and counted.

* per-gene Pearson r across spots: genes constant in the truth are excluded (r undefined) and counted;
  a gene whose *prediction* is constant gets r = 0 (a failure of the model, not of the data) and is counted;
* per-spot Pearson r across the target genes, with the same rules for spots;
* retrieval top-k: for every query (an image) the rank of its own candidate (its own expression profile)
  among all N candidates of the section; chance level is k / N.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_EPS = 1e-12


def _pearson_columns(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise r ``(G,)``, mask of constant truth, mask of constant prediction."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    pc, tc = p - p.mean(0), t - t.mean(0)
    sp, st = np.sqrt((pc ** 2).sum(0)), np.sqrt((tc ** 2).sum(0))
    const_true = st <= _EPS * max(1.0, float(np.abs(t).max(initial=0.0)))
    const_pred = sp <= _EPS * max(1.0, float(np.abs(p).max(initial=0.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * tc).sum(0) / (sp * st)
    r = np.where(const_pred & ~const_true, 0.0, r)
    r = np.where(const_true, np.nan, r)
    return r, const_true, const_pred & ~const_true


def pearson_per_gene(pred: np.ndarray, true: np.ndarray, genes: Sequence[str] | None = None) -> dict:
    """Per-gene r across spots for ``pred``/``true`` ``(N, G)``.

    Returns ``{"mean", "median", "n_genes", "n_evaluated", "n_constant_excluded", "n_constant_prediction",
    "per_gene"}``; ``mean`` is over evaluated (non-constant-truth) genes.
    """
    r, ct, cp = _pearson_columns(pred, true)
    ok = ~ct
    genes = list(genes) if genes is not None else [str(i) for i in range(r.shape[0])]
    return {
        "mean": float(np.mean(r[ok])) if ok.any() else float("nan"),
        "median": float(np.median(r[ok])) if ok.any() else float("nan"),
        "n_genes": int(r.shape[0]),
        "n_evaluated": int(ok.sum()),
        "n_constant_excluded": int(ct.sum()),
        "constant_excluded": [g for g, c in zip(genes, ct) if c],
        "n_constant_prediction": int(cp.sum()),
        "per_gene": {g: (None if np.isnan(v) else float(v)) for g, v in zip(genes, r)},
    }


def pearson_per_spot(pred: np.ndarray, true: np.ndarray) -> dict:
    """Per-spot r across genes (rows of ``(N, G)``); constant-truth spots excluded and counted."""
    r, ct, cp = _pearson_columns(np.asarray(pred).T, np.asarray(true).T)
    ok = ~ct
    return {
        "mean": float(np.mean(r[ok])) if ok.any() else float("nan"),
        "n_spots": int(r.shape[0]),
        "n_evaluated": int(ok.sum()),
        "n_constant_excluded": int(ct.sum()),
        "n_constant_prediction": int(cp.sum()),
    }


def retrieval_topk(scores: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k retrieval from a score matrix ``(Q, N)`` whose correct candidate for query i is column i.

    Ties are counted pessimistically (a candidate scoring equal to the correct one ranks before it).
    Returns ``{"top1", "top5", "chance_top1", "chance_top5", "n_candidates", "n_queries", "mean_rank"}``.
    """
    s = np.asarray(scores, dtype=np.float64)
    q, n = s.shape
    if q > n:
        raise ValueError("more queries than candidates: query i must have candidate i")
    correct = s[np.arange(q), np.arange(q)]
    rank = (s >= correct[:, None]).sum(1)  # 1 = best; ties count against
    out: dict = {"n_queries": int(q), "n_candidates": int(n), "mean_rank": float(rank.mean())}
    for k in ks:
        out[f"top{k}"] = float((rank <= k).mean())
        out[f"chance_top{k}"] = float(min(k, n) / n)
    return out


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
