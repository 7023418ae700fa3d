"""result.h5ad as a first-class scverse object: what scanpy and squidpy read with their default arguments.

* ``var_names``: unique gene symbols (``sc.read_visium`` convention), the ID where a symbol is missing;
  the IDs in ``var["gene_ids"]``.
* ``layers["counts"]``: raw counts; ``X``: ``log1p(normalize_total(counts, target_sum=1e4))`` with
  ``uns["log1p"]``.
* ``uns["spatial"][library]``: a ``hires`` image (the best image stmm had, at most 2,000 px a side) and a
  ``lowres`` one (at most 600 px), each with its true ``tissue_*_scalef``; no scale factor without its image.
* ``obs["stmm_domain"]`` (categorical, natural order) with ``uns["stmm_domain_colors"]`` = the colours of
  domains.png; with ground truth also the truth column's colours, ``obs["stmm_domain_matched"]`` (the
  names domains.png shows) and ``uns["stmm_domain_to_label"]``.
* stmm's own spatial graph as ``obsp["spatial_connectivities"]``/``obsp["spatial_distances"]`` and
  ``uns["spatial_neighbors"]`` (squidpy's keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.image import ImageSource
    from stmm_core.data.section import Section
    from stmm_core.domain_colors import DomainPalette
    from stmm_core.interfaces import SpatialGraph

HIRES_MAX_SIDE = 2000  # Space Ranger's tissue_hires_image.png
LOWRES_MAX_SIDE = 600  # Space Ranger's tissue_lowres_image.png
X_NOTE = ("X = log1p(normalize_total(counts, target_sum=1e4)); raw counts in layers['counts']; "
          "var_names = gene symbols (made unique), IDs in var['gene_ids']")


def downsample(image: "ImageSource", max_side: int, band_rows: int = 2048) -> tuple[np.ndarray, int]:
    """Every ``step``-th pixel of *image* so that no side exceeds *max_side*, read in horizontal bands of about
    *band_rows* source rows (a large full-resolution image is never decoded whole).
    Returns ``(array (h, w, 3) uint8, step)``."""
    step = max(1, int(np.ceil(max(image.height, image.width) / max_side)))
    if step == 1:
        return image.to_array(), 1
    rows = []
    band = max(1, band_rows // step) * step  # a multiple of step: the sampling grid continues across bands
    for y0 in range(0, image.height, band):
        y1 = min(image.height, y0 + band)
        rows.append(image.read_region(0, y0, image.width, y1)[::step, ::step])
    return np.ascontiguousarray(np.concatenate(rows, axis=0)), step


def unique_symbols(ids: Any, symbols: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """``(var_names, gene_ids)``: symbols where present (the ID where missing), made unique as anndata does
    (``-1``, ``-2`` … suffixes)."""
    import anndata
    import pandas as pd

    ids = np.asarray(ids, dtype=object).astype(str)
    if symbols is None:
        names = ids.copy()
    else:
        sym = pd.Series(np.asarray(symbols, dtype=object))
        missing = sym.isna().to_numpy() | sym.astype(str).str.strip().isin(["", "nan", "None", "NA"]).to_numpy()
        names = np.where(missing, ids, sym.astype(str).to_numpy()).astype(object)
    unique = anndata.utils.make_index_unique(pd.Index(names)).to_numpy().astype(str)
    return unique, ids


def log_normalise(counts: Any) -> Any:
    """CSR float32 ``log1p(counts / total * 1e4)`` per spot (scanpy normalize_total + log1p; empty spots stay 0)."""
    import scipy.sparse as sp

    m = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(m.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    m.data *= np.repeat(scale, np.diff(m.indptr)).astype(np.float32)
    np.log1p(m.data, out=m.data)
    return m


def graph_matrices(graph: "SpatialGraph | None", coords: np.ndarray) -> tuple[Any, Any] | None:
    """``(connectivities, distances)`` CSR ``(N, N)`` float32 from stmm's graph (distances in full-res px)."""
    import scipy.sparse as sp

    if graph is None:
        return None
    src, dst = np.asarray(graph.edge_index, dtype=np.int64)
    n = int(graph.n_nodes)
    if graph.distances is not None:
        dist = np.asarray(graph.distances, dtype=np.float32)
    else:
        dist = np.linalg.norm(coords[src] - coords[dst], axis=1).astype(np.float32)
    conn = sp.csr_matrix((np.ones(len(src), dtype=np.float32), (src, dst)), shape=(n, n))
    dmat = sp.csr_matrix((dist, (src, dst)), shape=(n, n))
    conn.sum_duplicates()
    dmat.sum_duplicates()
    conn.data[:] = 1.0
    return conn, dmat


def _spatial_entry(section: "Section", old: dict[str, Any] | None) -> dict[str, Any]:
    """``uns["spatial"][lib]`` with a hires and a lowres image and only true scale factors."""
    old = dict(old or {})
    sf_old = {k: v for k, v in dict(old.get("scalefactors", {})).items()}
    scalefactors = {k: float(v) for k, v in sf_old.items()
                    if np.isscalar(v) and not (str(k).startswith("tissue_") and str(k).endswith("_scalef"))}
    if section.spot_diameter is not None:
        scalefactors["spot_diameter_fullres"] = float(section.spot_diameter)
    metadata = {k: v for k, v in dict(old.get("metadata", {})).items() if np.isscalar(v)}
    images: dict[str, np.ndarray] = {}
    if section.image is not None and section.image_scale:
        for key, side in (("hires", HIRES_MAX_SIDE), ("lowres", LOWRES_MAX_SIDE)):
            arr, step = downsample(section.image, side)
            images[key] = arr
            scalefactors[f"tissue_{key}_scalef"] = float(section.image_scale) / step
        metadata["stmm_images"] = (
            f"hires/lowres: the image stmm used ({section.image.width}x{section.image.height} px, "
            f"{float(section.image_scale):.6g} px per full-resolution px) read every n-th pixel to at most "
            f"{HIRES_MAX_SIDE}/{LOWRES_MAX_SIDE} px a side; each tissue_*_scalef maps full-resolution px to it")
    return {"images": images, "scalefactors": scalefactors, "metadata": metadata}


def _categorical(values: Any, order: list[str] | None = None) -> Any:
    import pandas as pd

    from stmm_core.domain_colors import natural_order

    s = pd.Series(np.asarray(values, dtype=object))
    present = s.dropna().astype(str)
    cats = order or natural_order(present)
    return pd.Categorical(s.where(s.isna(), s.astype(str)), categories=[c for c in cats if c in set(present)])


def scverse_adata(section: "Section", embedding: np.ndarray, labels: np.ndarray | None,
                  palette: "DomainPalette | None", label_column: str | None, graph: "SpatialGraph | None",
                  stmm_uns: dict[str, Any]) -> "anndata.AnnData":
    """The result AnnData of a run (see the module docstring for its layout)."""
    import anndata
    import pandas as pd

    base = section.adata
    obs = (base.obs.copy() if base is not None else pd.DataFrame(index=section.obs_names))
    obs.index = pd.Index(np.asarray(section.obs_names).astype(str))
    names, ids = unique_symbols(section.gene_names, section.gene_symbols)
    var = base.var.copy() if base is not None and base.n_vars == section.n_genes else pd.DataFrame(index=ids)
    var.index = pd.Index(names)
    var["gene_ids"] = ids
    adata = anndata.AnnData(X=log_normalise(section.counts), obs=obs, var=var)
    adata.layers["counts"] = section.counts.astype(np.float32)
    adata.uns["log1p"] = {"base": None}
    if base is not None:  # everything else the input carried (its own layers, graphs, loadings) stays
        for k, v in base.obsm.items():
            adata.obsm[k] = v
        for k, v in base.layers.items():
            if k != "counts":
                adata.layers[k] = v
        for k, v in base.obsp.items():
            adata.obsp[k] = v
        if base.n_vars == section.n_genes:
            for k, v in base.varm.items():
                adata.varm[k] = v
        for k, v in base.uns.items():
            if k not in ("spatial", "log1p"):
                adata.uns[k] = v
    adata.obsm["spatial"] = np.asarray(section.coords, dtype=np.float64)
    adata.obsm["X_stmm"] = embedding
    lib = str(section.name)
    old = (base.uns.get("spatial") or {}) if base is not None else {}
    old_entry = old.get(lib) if isinstance(old, dict) else None
    if old_entry is None and isinstance(old, dict) and len(old) == 1:
        old_entry = next(iter(old.values()))
    adata.uns["spatial"] = {lib: _spatial_entry(section, old_entry)}
    if "library_id" in adata.obs and adata.obs["library_id"].nunique() > 1:
        adata.obs = adata.obs.drop(columns="library_id")  # squidpy would look for several libraries

    if labels is not None and palette is not None:
        adata.obs["stmm_domain"] = _categorical(np.asarray(labels).astype(str))
        adata.uns["stmm_domain_colors"] = palette.cluster_colours(adata.obs["stmm_domain"].cat.categories)
        if palette.matched is not None and label_column:
            adata.obs["stmm_domain_matched"] = _categorical(palette.matched)
            adata.uns["stmm_domain_matched_colors"] = palette.colours_for(
                adata.obs["stmm_domain_matched"].cat.categories)
            adata.uns["stmm_domain_to_label"] = dict(palette.mapping)
            truth = adata.obs[label_column]
            from stmm_core.metrics import labelled_mask

            keep = labelled_mask(truth.to_numpy())
            adata.obs[label_column] = _categorical(truth.where(keep, None).to_numpy())
            adata.uns[f"{label_column}_colors"] = palette.colours_for(adata.obs[label_column].cat.categories)
    mats = graph_matrices(graph, adata.obsm["spatial"])
    if mats is not None:
        adata.obsp["spatial_connectivities"], adata.obsp["spatial_distances"] = mats
        adata.uns["spatial_neighbors"] = {
            "connectivities_key": "spatial_connectivities", "distances_key": "spatial_distances",
            "params": {"source": "stmm", "coord_type": "generic", "transform": "none",
                       "builder": {k: v for k, v in graph.meta.items() if np.isscalar(v)}},
        }
    adata.uns["stmm"] = {**stmm_uns, "X": X_NOTE}
    return adata
