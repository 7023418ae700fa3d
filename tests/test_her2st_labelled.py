"""benchmarks/her2st_labelled.py: HER2ST sections with pathologist labels joined from the shared counts, spot
files and label tables (skips without the shared data)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_c1_joins_counts_positions_and_labels(shared_data, tmp_path):
    import anndata as ad

    from her2st_labelled import build  # type: ignore[import-not-found]
    from stmm_core.pipeline.run import load_section

    if not (shared_data / "her2st" / "ST-pat" / "lbl" / "C1_labeled_coordinates.tsv").exists():
        pytest.skip("HER2ST label tables absent")
    path = build("C1", tmp_path, root=shared_data)
    assert build("C1", tmp_path, root=shared_data) == path  # built once
    a = ad.read_h5ad(path)
    lab = pd.read_csv(shared_data / "her2st" / "ST-pat" / "lbl" / "C1_labeled_coordinates.tsv", sep="\t")
    # every spot of the counts that has a position is kept; 'undetermined' spots stay unlabelled
    assert a.n_obs == 176 and a.obs["label"].notna().sum() == 167
    assert set(a.obs["label"].dropna()) == set(lab["label"]) - {"undetermined"}
    # a label lands on the spot at its array position: spot '10x16' is the label row nearest (10, 16)
    row = lab.iloc[int(np.argmin((lab["x"] - 10) ** 2 + (lab["y"] - 16) ** 2))]
    got = a.obs.loc["10x16", "label"]
    assert (row["label"] == "undetermined" and pd.isna(got)) or got == row["label"]
    assert np.allclose(a.obsm["spatial"], a.obs[["pixel_x", "pixel_y"]].to_numpy())
    section = load_section(path)  # reads as any .h5ad section
    assert section.counts.shape[0] == 176 and float(section.counts.sum()) == pytest.approx(float(a.X.sum()))
