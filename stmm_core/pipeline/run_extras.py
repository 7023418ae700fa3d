"""Optional parts of a run folder that exist only when the fit produced them: the consensus confidence
(``obs["stmm_domain_confidence"]``, ``obsm["stmm_domain_seeds"]``, ``confidence.png``) and marker genes
(``uns["stmm_markers"]``, ``markers.csv``, ``markers.png``). Called by :func:`stmm_core.pipeline.outputs.write_run`
inside its staging folder, so they appear atomically with the rest of the run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.section import Section
    from stmm_core.pipeline.result import FitResult


def add_extras_to_adata(adata: "anndata.AnnData", result: "FitResult") -> None:
    """Consensus confidence, each seed's labels and the marker table, where the result has them."""
    if result.confidence is not None:
        adata.obs["stmm_domain_confidence"] = np.asarray(result.confidence, dtype=np.float32)
    if result.member_labels is not None:
        adata.obsm["stmm_domain_seeds"] = np.asarray(result.member_labels, dtype=np.int64).T
    if result.markers is not None:
        adata.uns["stmm_markers"] = result.markers.copy()
    for key, value in (result.obsm or {}).items():
        adata.obsm[key] = np.asarray(value)


def write_extras(folder: Path, section: "Section", result: "FitResult", metrics: dict[str, Any],
                 truth: Any | None = None) -> None:
    folder = Path(folder)
    if result.confidence is not None and result.labels is not None:
        from stmm_core.plots_confidence import plot_confidence

        plot_confidence(section, result.labels, result.confidence, folder / "confidence.png", truth=truth,
                        title=f"stmm {result.spec.recipe or 'pipeline'} · {section.name}",
                        summary=metrics.get("consensus"))
    if result.markers is not None and result.labels is not None:
        from stmm_core.pipeline.markers import plot_markers

        result.markers.to_csv(folder / "markers.csv", index=False)
        plot_markers(section, result.labels, result.markers, folder / "markers.png",
                     title=f"marker genes per domain · {section.name}")
