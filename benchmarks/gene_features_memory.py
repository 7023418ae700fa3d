"""Peak memory and time of the HVG → z-score → PCA gene features on a large synthetic sparse section.

    STMM_THREADS=1 python benchmarks/gene_features_memory.py --spots 1000000 --genes 300 --pca 30
    STMM_THREADS=1 python benchmarks/gene_features_memory.py --spots 1000000 --genes 300 --pca 30 --dense-reference

Counts: ``--density`` of the entries non-zero (default 0.08, Stereo-seq-like bins), values 1 + Poisson(1).
Prints one JSON line: the resident memory of the section itself, then wall time and peak RSS (sampled every
20 ms) of fit + transform; ``--dense-reference`` instead times the former computation (the dense z-scored
matrix and scikit-learn's PCA on it) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def make_section(n: int, g: int, density: float, seed: int = 0):
    """A section with CSR float32 counts ``(n, g)``, built row block by row block (no dense copy)."""
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.data.section import Section

    rng = np.random.default_rng(seed)
    blocks = []
    step = max(1, (1 << 24) // g)
    for lo in range(0, n, step):
        m = min(step, n - lo)
        mask = rng.random((m, g), dtype=np.float32) < density
        rows, cols = np.nonzero(mask)
        vals = (1 + rng.poisson(1.0, len(rows))).astype(np.float32)
        blocks.append(sp.csr_matrix((vals, (rows, cols)), shape=(m, g), dtype=np.float32))
    counts = sp.vstack(blocks, format="csr")
    coords = np.stack([np.arange(n) % 1000, np.arange(n) // 1000], 1).astype(np.float64) * 50
    return Section(name="synthetic", obs_names=pd.RangeIndex(n).astype(str), counts=counts,
                   gene_names=pd.Index([f"g{j}" for j in range(g)]), coords=coords)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spots", type=int, default=1_000_000)
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--top", type=int, default=None, help="n_top_genes (default: all genes)")
    ap.add_argument("--pca", type=int, default=30)
    ap.add_argument("--density", type=float, default=0.08)
    ap.add_argument("--dense-reference", action="store_true", help="time the dense z-scores + sklearn PCA")
    args = ap.parse_args(argv)

    from stmm_core.profiling import StageProfiler, current_rss_bytes
    from stmm_core.seeding import configure_threads
    from stmm_genes.hvg import HVGGeneEncoder
    from stmm_genes.params import HVGParams

    configure_threads()
    section = make_section(args.spots, args.genes, args.density)
    base = current_rss_bytes() / 2**20
    params = HVGParams(n_top_genes=args.top or args.genes, flavor="variance", pca=args.pca)
    prof = StageProfiler()
    enc = HVGGeneEncoder(params)
    if args.dense_reference:
        from sklearn.decomposition import PCA

        enc = HVGGeneEncoder(params.model_copy(update={"pca": None}))
        with prof.stage("dense reference"):
            Z = enc.fit(section).transform(section)  # the dense (N, genes) z-scores, as the former code built
            pca = PCA(n_components=args.pca, random_state=0).fit(Z)
            out = ((Z - pca.mean_) @ pca.components_.T).astype(np.float32)
            enc.info["pca_explained_variance_ratio"] = float(pca.explained_variance_ratio_.sum())
    else:
        with prof.stage("fit + transform"):
            out = enc.fit(section).transform(section)
    rec = prof.records[-1]
    print(json.dumps({
        "spots": args.spots, "genes": args.genes, "pca": args.pca, "nnz": int(section.counts.nnz),
        "mode": "dense reference" if args.dense_reference else "blocked",
        "section_rss_mb": round(base), "seconds": round(rec.seconds, 1), "peak_rss_mb": round(rec.peak_rss_mb),
        "peak_above_section_mb": round(rec.peak_rss_mb - base), "output_mb": round(out.nbytes / 2**20),
        "explained_variance_ratio": enc.info.get("pca_explained_variance_ratio"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
