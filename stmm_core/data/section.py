"""The in-memory data model of one tissue section.

One declared coordinate unit: ``coords`` are (x, y) in **full-resolution pixels**. Every image access maps
them through ``image_scale`` (full-resolution px → pixels of the image actually stored/read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.data.image import ImageSource


@dataclass
class Section:
    """One section, aligned by ``obs_names`` (never by row order across files).

    Attributes:
        name: library / sample id.
        obs_names: spot ids, unique, length N.
        counts: raw counts, CSR float32 ``(N, G)``, non-negative, finite.
        gene_names: length G, unique (symbols or Ensembl ids; ``gene_symbols`` holds symbols if known).
        coords: float64 ``(N, 2)`` = (x, y) in full-resolution pixels.
        image: lazy image or None.
        image_scale: multiply full-res coords by this to index ``image``.
        spot_diameter: spot diameter in full-resolution px, if known.
        obs: per-spot annotations (labels etc.), index = obs_names.
        adata: the AnnData the section came from (results are written back into a copy of it).
    """

    name: str
    obs_names: "pd.Index"
    counts: "sp.csr_matrix"
    gene_names: "pd.Index"
    coords: "np.ndarray"
    image: "ImageSource | None" = None
    image_scale: float | None = None
    spot_diameter: float | None = None
    obs: "pd.DataFrame | None" = None
    gene_symbols: "pd.Index | None" = None
    adata: "anndata.AnnData | None" = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_spots(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.counts.shape[1])

    def image_coords(self) -> "np.ndarray":
        """Coordinates in pixels of ``image`` (x, y)."""
        if self.image is None or self.image_scale is None:
            from stmm_core.errors import DataError

            raise DataError(f"section {self.name!r} has no image with a scale factor")
        return self.coords * float(self.image_scale)
