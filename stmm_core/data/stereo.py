"""Stereo-seq: DNB- or cell-level expression → bins of ``B × B`` DNB, as a bin AnnData or a :class:`Section`.

* :func:`bin_points` — the core: points (x, y, gene, count) → CSR bin × gene counts (duplicates summed), bin
  centres ``(bx + ½)·B, (by + ½)·B`` in DNB units (= full-resolution px of the registered ssDNA/H&E image);
* :func:`read_gem` — a GEM file (``.gem``/``.gem.gz``/``.tsv``: ``#`` header lines, then columns ``geneID``,
  ``x``, ``y``, ``MIDCount`` / ``MIDCounts`` / ``UMICount``), read in chunks so the point list is never held as
  one table, binned at ``bin_size``;
* :func:`bin_adata` — re-bin an AnnData of cells/DNBs (``obsm["spatial"]``) at bin size B (counts summed).

Binned sections are ordinary ``.h5ad`` bins with ``obsm["spatial"]``; :func:`stmm_core.data.readers.read_section`
reads GEM files directly with ``bin_size=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import scipy.sparse as sp

_COUNT_COLUMNS = ("MIDCount", "MIDCounts", "UMICount", "UMICounts", "count", "counts")


def bin_points(x: np.ndarray, y: np.ndarray, gene_codes: np.ndarray, counts: np.ndarray, n_genes: int,
               bin_size: float) -> tuple["sp.csr_matrix", np.ndarray, np.ndarray]:
    """Sum point counts into square bins.

    Args:
        x, y: DNB (or cell-centre) coordinates, ``(P,)``. gene_codes: int gene index per point in ``[0, n_genes)``.
        counts: count per point. bin_size: bin side B in the coordinate unit (e.g. 50 for bin50).

    Returns:
        ``counts`` CSR float32 ``(n_bins, n_genes)``, ``centres`` float64 ``(n_bins, 2)`` = (x, y) bin centres,
        ``origin`` int64 ``(n_bins, 2)`` = (bx, by) bin indices; bins sorted by (by, bx).
    """
    import scipy.sparse as sp

    if bin_size <= 0:
        raise DataError(f"bin_size must be positive, got {bin_size}")
    bx = np.floor(np.asarray(x, dtype=np.float64) / bin_size).astype(np.int64)
    by = np.floor(np.asarray(y, dtype=np.float64) / bin_size).astype(np.int64)
    if bx.size and (bx.min() < 0 or by.min() < 0):
        raise DataError("Stereo-seq coordinates must be non-negative DNB positions")
    width = int(bx.max()) + 1 if bx.size else 1
    key = by * width + bx
    uniq, inv = np.unique(key, return_inverse=True)
    m = sp.coo_matrix((np.asarray(counts, dtype=np.float32), (inv.reshape(-1), np.asarray(gene_codes, np.int64))),
                      shape=(len(uniq), n_genes)).tocsr()
    m.sum_duplicates()
    origin = np.stack([uniq % width, uniq // width], 1).astype(np.int64)
    return m, (origin + 0.5) * float(bin_size), origin


def _bins_adata(m: "sp.csr_matrix", centres: np.ndarray, origin: np.ndarray, genes: Any, bin_size: float,
                source: str) -> "anndata.AnnData":
    import anndata as ad
    import pandas as pd

    names = pd.Index([f"{bx}_{by}" for bx, by in origin], dtype=str)
    adata = ad.AnnData(X=m, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    adata.obsm["spatial"] = centres
    adata.obs["bin_x"], adata.obs["bin_y"] = origin[:, 0], origin[:, 1]
    adata.uns["stereo"] = {"bin_size": float(bin_size), "source": source}
    return adata


def read_gem(path: str | Path, bin_size: float = 50, chunksize: int = 5_000_000) -> "anndata.AnnData":
    """Read a GEM file and bin it at ``bin_size`` DNB → bin AnnData (``obsm["spatial"]`` = bin centres)."""
    import pandas as pd
    import scipy.sparse as sp

    p = Path(path)
    if not p.exists():
        raise DataError(f"GEM file not found: {p}")
    skip = 0
    import gzip

    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                skip += 1
            else:
                break
    genes: dict[str, int] = {}
    parts = []
    reader = pd.read_csv(p, sep="\t", skiprows=skip, chunksize=chunksize)
    for chunk in reader:
        cols = set(chunk.columns)
        ccol = next((c for c in _COUNT_COLUMNS if c in cols), None)
        if not {"geneID", "x", "y"} <= cols or ccol is None:
            raise DataError(f"{p}: a GEM file needs columns geneID, x, y and MIDCount (found {sorted(cols)})")
        g = chunk["geneID"].astype(str).to_numpy()
        codes = np.fromiter((genes.setdefault(s, len(genes)) for s in g), dtype=np.int64, count=len(g))
        parts.append((chunk["x"].to_numpy(), chunk["y"].to_numpy(), codes, chunk[ccol].to_numpy()))
    if not parts:
        raise DataError(f"{p}: the GEM file has no rows")
    x, y, codes, counts = (np.concatenate([q[i] for q in parts]) for i in range(4))
    m, centres, origin = bin_points(x, y, codes, counts, len(genes), bin_size)
    adata = _bins_adata(m, centres, origin, list(genes), bin_size, str(p))
    adata.X = sp.csr_matrix(adata.X)
    return adata


def bin_adata(adata: "anndata.AnnData", bin_size: float) -> "anndata.AnnData":
    """Re-bin cell/DNB-level ``adata`` (``obsm["spatial"]`` positions, raw counts in ``X``) at ``bin_size``."""
    import scipy.sparse as sp

    if "spatial" not in adata.obsm:
        raise DataError("bin_adata needs obsm['spatial'] (cell or DNB positions)")
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if bin_size <= 0:
        raise DataError(f"bin_size must be positive, got {bin_size}")
    b = np.floor(xy[:, :2] / bin_size).astype(np.int64)
    if b.size and b.min() < 0:
        raise DataError("Stereo-seq coordinates must be non-negative DNB positions")
    width = int(b[:, 0].max()) + 1 if len(b) else 1
    uniq, inv = np.unique(b[:, 1] * width + b[:, 0], return_inverse=True)
    n = len(xy)
    member = sp.csr_matrix((np.ones(n, np.float32), (inv.reshape(-1), np.arange(n))), shape=(len(uniq), n))
    m = (member @ sp.csr_matrix(adata.X, dtype=np.float32)).tocsr()
    origin = np.stack([uniq % width, uniq // width], 1).astype(np.int64)
    return _bins_adata(m, (origin + 0.5) * float(bin_size), origin, list(adata.var_names), bin_size, "bin_adata")
