"""Expression preprocessing for Magic: shared genes, log1p targets, gene selection, binning into tokens.

All selections are made on the *training* sections only, by gene name, and are stored with the run so that
evaluation never looks at held-out data to choose genes. Sections are weighted equally (a large section
does not dominate a score), unlike the published code's raw-count totals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from stmm_core.errors import DataError, MissingGenesError

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

    from stmm_core.data.section import Section


def shared_genes(sections: Sequence["Section"], min_shared: int = 1) -> list[str]:
    """Genes present in every section, in the order of the first section.

    Sections measured on different panels are combined on the **intersection** of their gene names (the
    documented rule); a :class:`DataError` is raised when the intersection has fewer than *min_shared* genes.
    """
    if not sections:
        raise DataError("no sections given")
    common = set(map(str, sections[0].gene_names))
    for s in sections[1:]:
        common &= set(map(str, s.gene_names))
    if len(common) < min_shared:
        sizes = ", ".join(f"{s.name}: {s.n_genes}" for s in sections)
        raise DataError(
            f"the sections share {len(common)} gene name(s) but at least {min_shared} are needed ({sizes} genes); "
            "they are combined on the intersection of var_names, so use sections measured on the same genes "
            "with the same naming (symbols or Ensembl ids, not a mix)"
        )
    return [g for g in map(str, sections[0].gene_names) if g in common]


def normalise_counts(counts: "sp.csr_matrix", target_sum: float) -> "sp.csr_matrix":
    """Library-size normalisation ``x / total · target_sum`` (CSR float32 ``(N, G)``); empty spots stay 0."""
    import scipy.sparse as sp

    m = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(m.sum(axis=1)).ravel()
    factor = np.where(totals > 0, target_sum / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
    return sp.csr_matrix(sp.diags(factor) @ m, dtype=np.float32)


def gene_columns(section: "Section", genes: Sequence[str], what: str, allow_missing: bool = False) -> np.ndarray:
    """Column of each gene in ``section`` (by name); -1 for a missing gene when *allow_missing*.

    Raises :class:`~stmm_core.errors.MissingGenesError` naming the missing genes otherwise.
    """
    import pandas as pd

    idx = pd.Index(map(str, section.gene_names)).get_indexer(list(genes))
    missing = [g for g, i in zip(genes, idx) if i < 0]
    if missing and not allow_missing:
        raise MissingGenesError(
            f"section {section.name!r} lacks {len(missing)} of the {len(genes)} {what} (e.g. "
            f"{', '.join(repr(g) for g in missing[:3])}); genes are matched by name: use a section measured on "
            "the same genes, or re-run on sections that include it"
        )
    return idx


def log1p_expression(section: "Section", genes: Sequence[str], target_sum: float,
                     what: str = "target genes", allow_missing: bool = False) -> np.ndarray:
    """``log1p(counts / total · target_sum)`` for *genes* (totals over ALL genes), float32 ``(N, len(genes))``.

    Missing genes (only with *allow_missing*) are NaN columns.
    """
    cols = gene_columns(section, genes, what, allow_missing=allow_missing)
    norm = normalise_counts(section.counts, target_sum)
    out = np.full((section.n_spots, len(genes)), np.nan, dtype=np.float32)
    ok = cols >= 0
    if ok.any():
        out[:, ok] = np.log1p(norm[:, cols[ok]].toarray())
    return out


def _per_section_stats(sections: Sequence["Section"], genes: list[str], target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of log1p-normalised expression per section, ``(S, G)`` each."""
    means, vars_ = [], []
    for s in sections:
        x = log1p_expression(s, genes, target_sum)
        means.append(x.mean(0))
        vars_.append(x.var(0))
    return np.stack(means), np.stack(vars_)


def rank_genes(sections: Sequence["Section"], genes: list[str], rule: str, target_sum: float = 1e4) -> list[str]:
    """*genes* sorted by decreasing score on the training sections (ties broken by name).

    ``rule="mean"`` / ``"mean_expression"``: mean over sections of the per-section mean of log1p-normalised
    expression. ``rule="hvg"``: mean over sections of the per-section variance (within-section variability,
    so genes that merely differ between sections are not favoured).
    """
    if rule not in ("mean", "mean_expression", "hvg"):
        raise ValueError(f"unknown gene ranking rule {rule!r}")
    means, vars_ = _per_section_stats(sections, genes, target_sum)
    score = vars_.mean(0) if rule == "hvg" else means.mean(0)
    order = sorted(range(len(genes)), key=lambda j: (-float(score[j]), genes[j]))
    return [genes[j] for j in order]


def select_genes(sections: Sequence["Section"], n: int, rule: str, explicit: Sequence[str] | None,
                 target_sum: float, what: str, setting: str = "...") -> list[str]:
    """The *n* top genes by *rule* among the shared genes, or the *explicit* list (checked present).

    *setting* is the spec key that sets *n* (named in the error so the user knows which ``--set`` to pass).
    """
    shared = shared_genes(sections, min_shared=1)
    if explicit is not None:
        missing = [g for g in explicit if g not in set(shared)]
        if missing:
            raise DataError(
                f"{len(missing)} of the {len(explicit)} requested {what} are not measured in every training section "
                f"(e.g. {', '.join(repr(g) for g in missing[:3])})"
            )
        return list(explicit)
    if len(shared) < n:
        raise DataError(
            f"{n} {what} were requested but the training sections share only {len(shared)} genes; "
            f"lower the number (e.g. --set {setting}={len(shared)}) or use sections measured on the same genes"
        )
    return rank_genes(sections, shared, rule, target_sum)[:n]


def bin_tokens(norm: np.ndarray, n_bins: int, mode: str = "log2") -> np.ndarray:
    """Normalised expression ``(N, G)`` float → int64 tokens in ``[0, n_bins]``.

    ``log2``: 0 for zero expression, else ``min(max(ceil(log2(1 + x)), 1), n_bins)`` (every detected gene is
    distinguished from an undetected one). ``scbert``: ``min(floor(log2(1 + x)), n_bins)`` as scBERT bins
    log-normalised values. NaN (a gene missing from the section) is not handled here (see the encoder's mask).
    """
    x = np.log2(1.0 + np.clip(np.nan_to_num(norm, nan=0.0), 0.0, None))
    if mode == "log2":
        tok = np.where(norm > 0, np.clip(np.ceil(x), 1, n_bins), 0)
    elif mode == "scbert":
        tok = np.clip(np.floor(x), 0, n_bins)
    else:
        raise ValueError(f"unknown binning {mode!r}")
    return tok.astype(np.int64)
