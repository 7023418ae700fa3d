"""Run plots: predicted domains named after the ground-truth label they overlap most."""

from __future__ import annotations

import numpy as np

from stmm_core.plots import match_to_truth


def test_match_to_truth_is_one_to_one_and_ignores_unlabelled():
    truth = np.array(["L1"] * 5 + ["L2"] * 5 + ["WM"] * 5 + ["nan"] * 3, dtype=object)
    pred = np.array([2] * 5 + [0] * 4 + [2] + [1] * 5 + [3] * 3)  # cluster 3 only covers unlabelled spots
    named = match_to_truth(pred, truth)
    assert list(named[:5]) == ["L1"] * 5 and list(named[5:9]) == ["L2"] * 4 and named[9] == "L1"
    assert list(named[10:15]) == ["WM"] * 5
    assert set(named[15:]) == {"extra 3"}  # more clusters than labels: the unmatched one keeps its own name
    # more labels than clusters: every cluster still gets exactly one label
    assert set(match_to_truth(np.zeros(18, dtype=int), truth)) == {"L1"}
    assert list(match_to_truth(pred, np.array(["nan"] * 18, dtype=object))) == [str(p) for p in pred]
