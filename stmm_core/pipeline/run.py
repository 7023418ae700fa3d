"""Reading a section for a fit, an embedding or a benchmark, and K for clustering: shared by every family.

(Graph-fusion's ``stmm fit`` runner, ``fit_to_dir``, lives in its plug-in: :mod:`stmm_graph_fusion.run`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def load_section(data: str | Path, image: str | Path | None = None, scale: float | None = None,
                 coords: str | Path | None = None, counts_layer: str | None = None,
                 bin_size: float | None = None, region: str | None = None, keep_genes: bool = False) -> "Section":
    """Read, validate and filter a section (one clear :class:`DataError` for any problem). ``keep_genes``: drop
    empty spots only, keep genes with zero counts (evaluating or predicting with a trained pipeline)."""
    from stmm_core.data.readers import read_section
    from stmm_core.data.validate import filter_section, validate_section

    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["image"] = image
    if scale is not None:
        kwargs["scale"] = scale
    if coords is not None:
        kwargs["coords"] = coords
    if counts_layer is not None:
        kwargs["counts_layer"] = counts_layer
    if bin_size is not None:
        kwargs["bin_size"] = bin_size
    if region is not None:
        kwargs["region"] = region
    section = read_section(data, **kwargs)
    section = validate_section(section)
    return filter_section(section, drop_genes=not keep_genes)


def _check_shared_label_names(truth: "np.ndarray", mask: "np.ndarray", ids: "np.ndarray", names: list[str],
                              labels: str, flag: str) -> None:
    """Several sections, K taken from their labels: two sections with no label name in common are refused (K from
    the union would count every domain twice); partly different names are a warning."""
    import warnings

    sets = [{str(c) for c in truth[mask & (ids == i)]} for i in range(len(names))]
    union = set().union(*sets)
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            if not sets[i] & sets[j]:
                raise DataError(
                    f"{flag} {labels!r}: sections {names[i]!r} and {names[j]!r} share no label name "
                    f"({', '.join(sorted(sets[i])[:5])} vs {', '.join(sorted(sets[j])[:5])}), so K from all their "
                    f"labels ({len(union)}) would count each domain twice; give --n-domains K, or labels that use "
                    "the same names in every section")
    odd = [f"{n} lacks {', '.join(sorted(union - s_)[:5])}" for n, s_ in zip(names, sets) if union - s_]
    if odd:
        warnings.warn(f"{flag} {labels!r}: K = {len(union)} from the label names of all sections; " + "; ".join(odd),
                      stacklevel=3)


def resolve_n_domains(section: "Section", n_domains: int | str | None, labels: str | None,
                      flag: str = "--labels") -> int | str | None:
    """K from ``--n-domains`` (a number, or ``"auto"``: chosen after training by
    :mod:`stmm_core.pipeline.auto_k`), else from the number of categories of the ``--labels`` column.

    A ``--labels`` column with no labelled spots, or with a single labelled class, is refused: ARI/NMI against it
    would be meaningless (a single class scores 1.0 for any clustering)."""
    if labels is not None:
        import numpy as np

        if section.obs is None or labels not in section.obs:
            cols = ", ".join(map(str, section.obs.columns)) if section.obs is not None else "none"
            raise DataError(f"{flag} {labels!r}: no such column in obs (columns: {cols})")
        from stmm_core.metrics import check_truth

        fix = ("drop --labels and give --n-domains K to cluster without scores" if flag == "--labels" else
               f"give {flag} a column with at least two labelled classes")
        truth = section.obs[labels].to_numpy()
        mask = check_truth(truth, f"{flag} {labels!r}", fix)
        n_classes = len({str(c) for c in truth[mask]})
        if n_classes > 2 and 2 * n_classes > int(mask.sum()):  # about one spot per class: ids, not domains
            raise DataError(f"{flag} {labels!r} has {n_classes} classes for {int(mask.sum())} labelled spots (fewer "
                            f"than two spots per class), so it looks like an id column, not domains; give the column "
                            f"of domain labels to {flag}")
        ids = section.meta.get("section_ids")
        if ids is not None and "section" in section.obs:  # several --data sections: each is scored on its own
            names = list(section.obs["section"].cat.categories)
            for i, name in enumerate(names):
                check_truth(truth[np.asarray(ids) == i], f"{flag} {labels!r} in section {name!r}",
                            "give sections that all carry that column, or " + fix)
            if n_domains is None:  # K from the union of the sections' label names: they must mean the same
                _check_shared_label_names(truth, mask, np.asarray(ids), names, labels, flag)
    if n_domains is not None:
        if n_domains == "auto":
            return n_domains
        if n_domains > section.n_spots:
            raise DataError(f"--n-domains {n_domains} is more than the {section.n_spots} spots of section "
                            f"{section.name!r}; give a smaller K")
        return n_domains
    if labels is not None:
        from stmm_core.metrics import labelled_mask

        col = section.obs[labels]
        return int(col[labelled_mask(col.to_numpy())].astype(str).nunique())
    return None


def domain_label_map(pred: Any, truth: Any) -> dict[str, str]:
    """``{domain id: best-matching label}`` (one-to-one, Hungarian; as drawn in domains.png); domains left over
    are named ``extra <id>``."""
    import numpy as np

    from stmm_core.plots import match_to_truth

    pred = np.asarray(pred).astype(str)
    named = match_to_truth(pred, truth)
    return {str(p): str(named[np.flatnonzero(pred == p)[0]]) for p in sorted(set(pred), key=lambda s: (len(s), s))}
