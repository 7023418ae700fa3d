"""How much sequencing depth alone moves the expression scores: the training-mean predictor on a held-out
section thinned to fewer UMIs per spot (binomial thinning of every count), beside HER2ST A1 as it is.

    .venv/bin/python benchmarks/magic_depth.py [--held C2] [--train C3 C4 C5 C6] [--fractions 1 0.5 0.1]

Targets and their scale are the magic recipe's (the 300 most expressed training genes, log1p(counts / total
· 1e4)). Per-gene Pearson is invariant to a per-gene shift, so the training mean scores 0 on it at any depth;
MSE and per-spot Pearson are not: compare those only between sections of similar depth.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from pathlib import Path

#: STMM_DATA (default ../shared/data beside the repository), as the tests read it
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    import os

    import scipy.sparse as sp

    from stmm_magic.genes import log1p_expression, select_genes
    from stmm_magic.metrics import mse, pearson_per_spot
    from stmm_magic.pipeline import read_sections

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held", default="C2")
    ap.add_argument("--train", nargs="+", default=["C3", "C4", "C5", "C6"])
    ap.add_argument("--other", default="A1", help="a section scored as it is, for comparison")
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.5, 0.1])
    args = ap.parse_args()
    args.data = str(Path(os.environ.get("STMM_DATA", DATA)) / "her2st" / "h5ad" / "her2st_{}.h5ad")
    train = read_sections([args.data.format(s) for s in args.train])
    genes = select_genes(train, 300, "mean_expression", None, 1e4, "targets")
    mean = np.concatenate([log1p_expression(s, genes, 1e4) for s in train]).mean(0, keepdims=True)
    rng = np.random.default_rng(0)
    for held, fractions in ((args.held, args.fractions), (args.other, [1.0])):
        sec = read_sections([args.data.format(held)])[0]
        for p in fractions:
            c = sp.csr_matrix(sec.counts).astype(np.int64)
            if p < 1:
                c.data = rng.binomial(c.data, p)
                c.eliminate_zeros()
            t = replace(sec, counts=sp.csr_matrix(c, dtype=np.float32))
            keep = np.asarray(t.counts.sum(1)).ravel() > 0
            y = log1p_expression(t, genes, 1e4)[keep]
            pred = np.repeat(mean, len(y), 0)
            print(f"{held} x{p:g}: median UMI per spot {np.median(np.asarray(t.counts.sum(1)).ravel()):.0f}; "
                  f"training mean: per-spot r {pearson_per_spot(pred, y)['mean']:.3f}, MSE {mse(pred, y):.3f}")


if __name__ == "__main__":
    main()
