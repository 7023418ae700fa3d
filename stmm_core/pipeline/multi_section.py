"""Several sections in one graph-fusion fit (``stmm fit|run --data s1 s2 …``).

* **Genes**: those present in every section (by name, the first section's order).
* **Spatial graph**: one per section, no edge across sections (block-diagonal adjacency). The sections are laid
  side by side along x with a gap wider than any section, so every graph builder connects spots of one section
  only; :func:`cross_section_edges` checks it on the built graph (the fit stops if it is ever non-zero).
* **Normalisation**: library size and log per spot (as for one section); the gene features (one HVG list and
  one PCA basis for all sections) are then standardised per section (each section's features centred and scaled
  to unit variance on its own), so a section-wide shift in expression does not become a domain.
* **Training**: one model, jointly on all spots; **one labelling** across sections, so a domain id means the same
  thing in every section.
* **Batch correction** (optional, ``--batch-correct harmony``): Harmony (harmonypy, extra ``multi``) on the
  embedding with the section as batch, before clustering; the corrected embedding is ``obsm["X_stmm_corrected"]``.

result.h5ad holds all spots with ``obs["section"]``; ``obsm["spatial"]`` keeps each section's own coordinates.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from stmm_core.errors import DataError, MissingDependency

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def _unique_names(sections: Sequence["Section"]) -> list[str]:
    names: list[str] = []
    for i, s in enumerate(sections):
        base = str(s.name or f"section{i + 1}")
        name, j = base, 2
        while name in names:
            name, j = f"{base}_{j}", j + 1
        names.append(name)
    return names


def combine_sections(sections: Sequence["Section"]) -> "Section":
    """One :class:`Section` of all spots: shared genes, coordinates laid side by side, ``obs["section"]``."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.data.section import Section

    if len(sections) < 2:
        raise DataError("combine_sections needs at least two sections")
    names = _unique_names(sections)
    first = [str(g) for g in sections[0].gene_names]
    common = set(first)
    for s in sections[1:]:
        common &= {str(g) for g in s.gene_names}
    genes = [g for g in first if g in common]
    if not genes:
        raise DataError("the sections given with --data share no gene names; give sections measured with the same "
                        "gene identifiers (e.g. all Ensembl ids or all symbols)")
    most = max(len(s.gene_names) for s in sections)
    if len(genes) < 0.5 * most:  # e.g. a gene subset, or symbols in one section and Ensembl ids in another
        import warnings

        sizes = ", ".join(f"{n}: {len(s.gene_names)}" for n, s in zip(names, sections))
        warnings.warn(f"the --data sections share only {len(genes)} gene names ({sizes}); the joint fit uses those "
                      f"{len(genes)} (files holding different gene subsets, or different identifiers?)", stacklevel=2)
    counts, coords, obs_names, obs, adatas, offset = [], [], [], [], [], 0.0
    widths = [float(np.ptp(np.asarray(s.coords)[:, 0])) + (s.spot_diameter or 0.0) for s in sections]
    gap = max(widths) + 1.0
    per = []
    for name, s in zip(names, sections):
        idx = pd.Index([str(g) for g in s.gene_names]).get_indexer(genes)
        counts.append(sp.csr_matrix(s.counts)[:, idx])
        xy = np.asarray(s.coords, dtype=np.float64).copy()
        shift = offset - xy[:, 0].min()
        xy[:, 0] += shift
        coords.append(xy)
        offset = xy[:, 0].max() + gap
        obs_names.append(pd.Index([f"{name}:{o}" for o in s.obs_names]))
        o = s.obs.copy() if s.obs is not None else pd.DataFrame(index=s.obs_names)
        o.index = obs_names[-1]
        o.insert(0, "section", name)
        obs.append(o)
        if s.adata is not None:
            a = s.adata[:, idx].copy()
            a.obs_names = obs_names[-1]
            a.obs.insert(0, "section", name)
            adatas.append(a)
        per.append({"name": name, "n_spots": s.n_spots, "n_genes": s.n_genes, "x_shift": shift})
    obs_df = pd.concat(obs, axis=0)
    obs_df["section"] = pd.Categorical(obs_df["section"], categories=names)
    adata = None
    if len(adatas) == len(sections):
        adata = ad.concat(adatas, axis=0, join="inner", merge="same", uns_merge="unique")
        adata.obs["section"] = pd.Categorical(adata.obs["section"].astype(str), categories=names)
        spatial = {}
        for s in sections:  # each library's images and scale factors, as scanpy/squidpy keep them
            spatial.update((s.adata.uns.get("spatial") or {}) if s.adata is not None else {})
        if spatial:
            adata.uns["spatial"] = spatial
    symbols = None
    if sections[0].gene_symbols is not None:
        sym = pd.Series(list(sections[0].gene_symbols), index=[str(g) for g in sections[0].gene_names])
        symbols = pd.Index(sym.loc[genes].astype(str).to_numpy())
    section_ids = obs_df["section"].cat.codes.to_numpy().astype(np.int64)
    return Section(name="+".join(names), obs_names=pd.Index(np.concatenate([o.to_numpy() for o in obs_names])),
                   counts=sp.vstack(counts).tocsr().astype(np.float32), gene_names=pd.Index(genes),
                   coords=np.concatenate(coords), image=None, image_scale=None,
                   spot_diameter=sections[0].spot_diameter, obs=obs_df, gene_symbols=symbols, adata=adata,
                   meta={"sections": per, "section_ids": section_ids, "shared_genes": len(genes)})


def standardise_per_section(x: np.ndarray, section_ids: np.ndarray) -> np.ndarray:
    """Centre each section's rows of *x* and scale every column to unit variance within the section."""
    out = np.asarray(x, dtype=np.float64).copy()
    for sid in np.unique(section_ids):
        m = section_ids == sid
        block = out[m]
        sd = block.std(axis=0)
        out[m] = (block - block.mean(axis=0)) / np.where(sd > 1e-8, sd, 1.0)
    return out.astype(np.float32)


def harmony(embedding: np.ndarray, section_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Harmony (harmonypy) on *embedding* with the section as the batch variable."""
    try:
        import harmonypy
    except ImportError:
        raise MissingDependency("--batch-correct harmony needs harmonypy: pip install 'stmm[multi]' "
                                "(or pip install harmonypy)") from None
    import pandas as pd

    meta = pd.DataFrame({"section": pd.Categorical(np.asarray(section_ids).astype(str))})
    ho = harmonypy.run_harmony(np.asarray(embedding, dtype=np.float64), meta, ["section"], random_state=seed,
                               verbose=False)
    z = np.asarray(ho.Z_corr)
    if z.shape[0] != embedding.shape[0]:  # harmonypy < 2 returns (dims, cells)
        z = z.T
    return z.astype(np.float32)


def cross_section_edges(spec: Any, section: "Section") -> int:
    """Edges of the spec's graph that join spots of different sections (0 by construction)."""
    from stmm_core.pipeline_base import build_component as _build

    graph = _build(spec, "builder").build(section.coords, section.spot_diameter)
    ei = np.asarray(graph.edge_index)
    ids = section.meta["section_ids"]
    return int((ids[ei[0]] != ids[ei[1]]).sum())


def load_sections(loads: Sequence[dict[str, Any]]) -> "Section":
    """Read every section (arguments of :func:`stmm_core.pipeline.run.load_section`) and combine them."""
    from stmm_core.pipeline.run import load_section

    return combine_sections([load_section(**kw) for kw in loads])


def fit_kwargs(spec: Any, section: "Section", batch_correct: str | None, *, device: str = "cpu",
               cache: Any | None = None, progress: bool = False,
               sections: Sequence["Section"] | None = None) -> dict[str, Any]:
    """The extra arguments of :func:`stmm_graph_fusion.fit.fit_graph_fusion` for a combined section: per-section standardisation of the
    gene features, optional Harmony, and - when the spec has an image encoder - each section's image features
    encoded on its own image (the combined section has none). Picklable, for consensus workers."""
    ids = section.meta["section_ids"]
    kw: dict[str, Any] = {"gene_transform": partial(standardise_per_section, section_ids=ids)}
    if spec.components.get("image") is not None:
        from stmm_core.pipeline_base import build_component as _build
        from stmm_core.pipeline.image_features import encode_section
        from stmm_core.seeding import seed_everything

        feats = []
        for s in sections or []:
            if s.image is None:
                raise DataError(f"the spec has an image encoder but section {s.name!r} has no image; give sections "
                                "with images or use an image-free recipe (e.g. stereomm-expression)")
            seed_everything(spec.train.seed)
            enc = _build(spec, "image")
            feats.append(encode_section(s, enc, spec.tiles, device=device, cache=cache, progress=progress)[0])
        kw["image_features"] = np.concatenate(feats, axis=0)
    seed = spec.train.seed
    if batch_correct == "harmony":
        kw["embedding_transform"] = partial(harmony, section_ids=ids, seed=seed)
    elif batch_correct not in (None, "none"):
        raise DataError(f"--batch-correct {batch_correct!r}: use harmony or none")
    return kw


def section_scores(section: "Section", labels: np.ndarray, label_column: str) -> dict[str, Any]:
    """ARI/NMI per section and pooled, and whether one domain id means the same label in every section."""
    import pandas as pd

    from stmm_core.metrics import clustering_scores, labelled_mask

    truth = section.obs[label_column].to_numpy()
    names = list(section.obs["section"].cat.categories)
    ids = section.meta["section_ids"]
    out: dict[str, Any] = {"pooled": clustering_scores(truth, labels), "sections": {}}
    majority: dict[str, dict[str, str]] = {}
    for i, name in enumerate(names):
        m = ids == i
        out["sections"][name] = clustering_scores(truth[m], labels[m])
        ok = labelled_mask(truth[m])
        tab = pd.crosstab(np.asarray(labels[m])[ok], np.asarray(truth[m], dtype=object)[ok].astype(str))
        majority[name] = {str(d): str(tab.loc[d].idxmax()) for d in tab.index}
    doms = sorted(set.intersection(*[set(v) for v in majority.values()]), key=lambda s: (len(s), s))
    same = [d for d in doms if len({majority[n][d] for n in names}) == 1]
    out["domain_majority_label"] = {d: {n: majority[n].get(d) for n in names} for d in
                                    sorted(set().union(*[set(v) for v in majority.values()]), key=lambda s: (len(s), s))}
    out["domains_same_label_everywhere"] = f"{len(same)} of {len(doms)} domains present in every section"
    return out


def prepare_sections(spec: Any, paths: Sequence[Any], *, image: Any = None, scale: Any = None, coords: Any = None,
                     counts_layer: str | None = None, batch_correct: str | None = None, device: str = "cpu",
                     cache: Any | None = None, progress: bool = False) -> tuple["Section", dict[str, Any],
                                                                                dict[str, Any]]:
    """Read and combine the sections of ``--data A B …``: (combined section, how a worker re-reads it, the extra
    arguments of :func:`stmm_graph_fusion.fit.fit_graph_fusion`)."""
    from stmm_core.errors import StmmError
    from stmm_core.pipeline.run import load_section

    if image is not None or scale is not None or coords is not None:
        raise StmmError("--image/--scale/--coords apply to one section; with several --data sections give files "
                        "that carry their own positions and images (.h5ad or Space Ranger folders)")
    loads = [{"data": p, "counts_layer": counts_layer} for p in paths]
    try:
        sections = [load_section(**kw) for kw in loads]
    except StmmError as exc:
        if "--coords" not in str(exc):
            raise
        raise type(exc)(f"{exc}. With several --data sections --coords is not taken: store the positions in each "
                        "file (obsm['spatial']), or fit the section alone") from None
    section = combine_sections(sections)
    n_cross = cross_section_edges(spec, section)
    if n_cross:  # pragma: no cover - the side-by-side layout makes this impossible; a guard, not a code path
        raise StmmError(f"internal: {n_cross} graph edges join different sections")
    section.meta["cross_section_edges"] = n_cross
    kw = fit_kwargs(spec, section, batch_correct, device=device, cache=cache, progress=progress,
                    sections=sections)
    return section, {"sections": loads}, kw
