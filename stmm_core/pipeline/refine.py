"""Spatial label refinement: each spot takes the majority domain of its k nearest spots (itself included).

The same post-processing SpaGCN and GraphST apply before scoring; it removes isolated mislabelled spots.
Ties keep the spot's own label.
"""

from __future__ import annotations

import numpy as np


def refine_labels(coords: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Majority vote over the *k* nearest spots (self included); ``k <= 1`` returns the labels unchanged."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if k <= 1 or n <= 1:
        return labels.copy()
    from scipy.spatial import cKDTree

    k = min(k, n)
    _, idx = cKDTree(coords).query(coords, k=k)
    n_lab = int(labels.max()) + 1
    votes = np.zeros((n, n_lab), dtype=np.int32)
    np.add.at(votes, (np.repeat(np.arange(n), k), labels[idx].ravel()), 1)
    best = votes.argmax(1)
    own = votes[np.arange(n), labels]
    keep = own >= votes[np.arange(n), best]  # a tie keeps the spot's own label
    return np.where(keep, labels, best).astype(np.int64)
