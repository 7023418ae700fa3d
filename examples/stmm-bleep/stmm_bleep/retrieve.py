"""Prediction by retrieval and image–expression scores (numpy only).

A query spot's expression is the weighted mean of the expression of the ``k`` training spots whose
*expression* embeddings are most similar (cosine) to the query's *image* embedding, weights
``softmax(similarity / temperature)`` over those ``k`` (BLEEP averages them with equal weights: a large
temperature).
"""

from __future__ import annotations

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(query: np.ndarray, reference: np.ndarray, values: np.ndarray, k: int,
                temperature: float, block: int = 4096) -> np.ndarray:
    """``(Q, G)`` predictions for normalised ``query (Q, d)`` from ``reference (R, d)`` with ``values (R, G)``.

    Queries are processed *block* rows at a time (memory ``block × R``). Ties in similarity are broken by the
    lower reference row (stable sort), so results are deterministic.
    """
    if reference.shape[0] != values.shape[0]:
        raise ValueError(f"reference {reference.shape} and values {values.shape} differ in rows")
    k = int(min(k, reference.shape[0]))
    ref = np.asarray(reference, np.float64)
    vals = np.asarray(values, np.float64)
    out = np.empty((query.shape[0], vals.shape[1]), dtype=np.float32)
    for lo in range(0, query.shape[0], block):
        sim = np.asarray(query[lo:lo + block], np.float64) @ ref.T  # (b, R)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(sim, top, axis=1) / float(temperature)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out[lo:lo + block] = np.einsum("qk,qkg->qg", w, vals[top])
    return out


def cosine_scores(image_emb: np.ndarray, expr_emb: np.ndarray) -> np.ndarray:
    """``(Q, N)`` cosine similarity of image embedding q and expression embedding n (query i ↔ candidate i)."""
    return (l2_normalise(image_emb).astype(np.float64) @ l2_normalise(expr_emb).astype(np.float64).T)
