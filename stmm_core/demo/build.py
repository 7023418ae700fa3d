"""Rebuild the embedded demo sample from the shared DLPFC section 151676.

    python -m stmm_core.demo.build ../shared/data/dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad

Keeps every spot, the layer labels, the low-resolution H&E image and its scale factors, and the 2,000
genes with the highest normalised dispersion (scanpy 'seurat' flavour) of the 5,000 provided: real data,
small enough (~3 MB) to ship inside the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEMO_PATH = Path(__file__).with_name("dlpfc_151676_demo.h5ad")


def build(src: str | Path, dst: Path = DEMO_PATH, n_genes: int = 2000) -> Path:
    import anndata as ad
    import numpy as np
    import scanpy as sc

    a = ad.read_h5ad(src)
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.pp.highly_variable_genes(b, n_top_genes=n_genes, flavor="seurat")
    keep = b.var["highly_variable"].to_numpy()
    out = a[:, keep].copy()
    out.obs = out.obs[["in_tissue", "array_row", "array_col", "layer"]].copy()
    out.var = out.var[["symbol"]].copy()
    out.X = out.X.astype(np.float32)
    out.uns["stmm_demo"] = {
        "source": "DLPFC 151676 (Maynard et al. 2021): counts via the Banksy R package (MIT), "
        "image/positions/labels from LieberInstitute/HumanPilot (Artistic-2.0)",
        "genes": f"top {n_genes} by dispersion of the 5,000 provided",
    }
    out.write_h5ad(dst, compression="gzip")
    return dst


if __name__ == "__main__":  # pragma: no cover
    print(build(sys.argv[1]))
