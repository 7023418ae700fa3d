"""Evaluation metrics (sklearn, imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np

MISSING_LABELS = {"", "nan", "na", "none", "null", "unknown"}


def labelled_mask(truth: Any) -> np.ndarray:
    """True for spots with a ground-truth label (NaN, empty, 'NA' … are unlabelled)."""
    import pandas as pd

    s = pd.Series(truth)
    return (~s.isna() & ~s.astype(str).str.strip().str.lower().isin(MISSING_LABELS)).to_numpy()


def clustering_scores(truth: Any, pred: np.ndarray) -> dict[str, float | int]:
    """ARI and NMI of *pred* against *truth*, unlabelled spots excluded (and counted)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    mask = labelled_mask(truth)
    t = np.asarray(truth, dtype=object)[mask].astype(str)
    p = np.asarray(pred)[mask]
    return {
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "n_labelled": int(mask.sum()),
        "n_unlabelled": int((~mask).sum()),
        "n_true_domains": int(len(set(t))),
    }
