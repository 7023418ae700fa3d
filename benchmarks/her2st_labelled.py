"""HER2ST sections with pathologist labels as domain-benchmark sections (counts + spot positions + labels).

    .venv/bin/python benchmarks/her2st_labelled.py --out W/her2st    # writes her2st_<S>_labelled.h5ad per section

The shared data holds counts for all 36 HER2ST sections (``ST-cnts``), their spot files (``ST-spotfiles``:
array x/y and pixel x/y) and pathologist labels for eight of them (``ST-pat/lbl``); only A1 ships as an
``.h5ad``. This script joins the three for every labelled section that has a spot file (C1, D1, E1, F1, G2, H1;
J1 has no spot file, A1 is already an ``.h5ad``): a label row's array position is its ``(round(x), round(y))``,
the key of the count and spot-file rows. ``undetermined`` spots are left unlabelled (NaN: no domain, excluded
from ARI). Positions are the spot file's pixel coordinates; no image is attached (the domain recipes used
with these files are image-free). Six sections from six patients: a check on tissue the DLPFC-chosen
defaults never saw.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

LABELLED = ("C1", "D1", "E1", "F1", "G2", "H1")


def build(section: str, out: Path, root: Path | None = None) -> Path:
    """Write ``out/her2st_<section>_labelled.h5ad`` (raw counts, ``obsm["spatial"]``, ``obs["label"]``)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.benchmark.datasets import data_root

    d = (root or data_root()) / "her2st"
    dest = out / f"her2st_{section}_labelled.h5ad"
    if dest.exists():
        return dest
    counts = pd.read_csv(d / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(d / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    labels = pd.read_csv(d / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv", sep="\t").dropna(subset=["x"])
    labels.index = labels["x"].round().astype(int).astype(str) + "x" + labels["y"].round().astype(int).astype(str)
    keep = [s for s in counts.index if s in spots.index]
    obs = spots.loc[keep, ["x", "y", "pixel_x", "pixel_y"]].copy()
    lab = labels["label"].reindex(keep)
    obs["label"] = lab.where(lab != "undetermined").astype("category")
    X = sp.csr_matrix(counts.loc[keep].to_numpy(dtype=np.float32))
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(counts.columns.astype(str))))
    a.var_names_make_unique()
    a.obsm["spatial"] = obs[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    out.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.h5ad")  # two processes may build at once
    a.write_h5ad(tmp)
    tmp.replace(dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sections", nargs="+", default=list(LABELLED))
    args = ap.parse_args()
    import anndata as ad

    for s in args.sections:
        p = build(s, args.out)
        a = ad.read_h5ad(p)
        print(f"{s}: {a.n_obs} spots, {a.n_vars} genes, labels {a.obs['label'].value_counts().to_dict()} -> {p}")


if __name__ == "__main__":
    main()
