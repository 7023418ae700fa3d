"""Target genes and log1p targets, chosen on the training sections only (by name), numpy/scipy.

Rules (those of the bundled expression baselines, so a benchmark compares like with like): the targets are the
``n`` shared genes of highest mean log1p-normalised expression, each section weighted equally, ties broken by
name; the evaluation HVGs are the targets of highest within-section variance (mean over sections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def shared_genes(sections: Sequence["Section"]) -> list[str]:
    """Genes measured in every section, in the first section's order."""
    common = set(map(str, sections[0].gene_names))
    for s in sections[1:]:
        common &= set(map(str, s.gene_names))
    return [g for g in map(str, sections[0].gene_names) if g in common]


def log1p_targets(section: "Section", genes: Sequence[str], target_sum: float) -> np.ndarray:
    """``log1p(counts / total · target_sum)`` of *genes* (totals over all genes), float32 ``(N, len(genes))``."""
    import pandas as pd
    import scipy.sparse as sp

    cols = pd.Index(map(str, section.gene_names)).get_indexer(list(genes))
    missing = [g for g, c in zip(genes, cols) if c < 0]
    if missing:
        raise DataError(f"section {section.name!r} lacks {len(missing)} of the {len(genes)} target genes of this "
                        f"pipeline (e.g. {', '.join(map(repr, missing[:3]))}); genes are matched by name: give a "
                        "section measured on the same genes as the training sections (--data)")
    m = sp.csr_matrix(section.counts, dtype=np.float32)
    totals = np.asarray(m.sum(axis=1)).ravel()
    factor = np.where(totals > 0, target_sum / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
    norm = sp.csr_matrix(sp.diags(factor) @ m, dtype=np.float32)
    return np.log1p(norm[:, cols].toarray()).astype(np.float32)


def choose_targets(sections: Sequence["Section"], n: int, n_hvg: int, target_sum: float) -> dict[str, list[str]]:
    """``{"targets": n genes, "eval_hvg": the n_hvg most variable targets}``, from the training *sections*."""
    shared = shared_genes(sections)
    if len(shared) < n:
        raise DataError(f"{n} target genes were requested but the training sections share only {len(shared)} "
                        f"genes; lower it (--set train.n_targets={len(shared)}) or use sections measured on the "
                        "same genes")
    per = [log1p_targets(s, shared, target_sum) for s in sections]
    mean = np.stack([x.mean(0) for x in per]).mean(0)
    order = sorted(range(len(shared)), key=lambda j: (-float(mean[j]), shared[j]))[:n]
    targets = [shared[j] for j in order]
    var = np.stack([x[:, order].var(0) for x in per]).mean(0)
    hvg = [targets[j] for j in sorted(range(n), key=lambda j: (-float(var[j]), targets[j]))[:n_hvg]]
    return {"targets": targets, "eval_hvg": hvg}
