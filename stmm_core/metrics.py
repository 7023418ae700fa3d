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


def check_truth(truth: Any, what: str = "the ground-truth labels", fix: str = "") -> np.ndarray:
    """The labelled mask of *truth*; a :class:`~stmm_core.errors.DataError` when there are no labelled spots or
    fewer than two labelled classes (ARI/NMI would be undefined, or 1.0 for any clustering)."""
    from stmm_core.errors import DataError

    mask = labelled_mask(truth)
    tail = f"; {fix}" if fix else ""
    if not mask.any():
        raise DataError(f"{what} has no labelled spots (all {len(mask)} are empty/NA); scores cannot be "
                        f"computed{tail}")
    classes = sorted({str(c) for c in np.asarray(truth, dtype=object)[mask]})
    if len(classes) < 2:
        raise DataError(f"{what} has a single labelled class ({classes[0]!r}); ARI/NMI need at least two"
                        f"{tail}")
    return mask


def clustering_scores(truth: Any, pred: np.ndarray) -> dict[str, float | int]:
    """ARI and NMI of *pred* against *truth*, unlabelled spots excluded (and counted). Refused (DataError) on
    fewer than two labelled classes or no labelled spot: see :func:`check_truth`."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    mask = check_truth(truth)
    t = np.asarray(truth, dtype=object)[mask].astype(str)
    p = np.asarray(pred)[mask]
    return {
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "n_labelled": int(mask.sum()),
        "n_unlabelled": int((~mask).sum()),
        "n_true_domains": int(len(set(t))),
    }
