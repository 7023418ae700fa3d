"""What a fit that clusters domains produces, as the core's run-folder writer (:mod:`stmm_core.pipeline.outputs`)
reads it: embedding, labels, weights, history, profile, and the optional consensus/marker extras."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.profiling import StageProfiler

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from stmm_core.spec import PipelineSpec


@dataclass
class FitResult:
    """Everything a fit produces (written to a run folder by :mod:`stmm_core.pipeline.outputs`)."""

    spec: "PipelineSpec"
    embedding: np.ndarray  # (N, L) float32, posterior mean
    labels: np.ndarray | None  # (N,) int64
    history: list[dict[str, float]]
    state_dict: dict[str, "torch.Tensor"]
    profile: StageProfiler
    info: dict[str, Any] = field(default_factory=dict)
    gene_state: dict[str, Any] | None = None
    graph: Any = None  # the SpatialGraph the model trained on (written to result.h5ad obsp)
    confidence: np.ndarray | None = None  # (N,) consensus runs: fraction of seeds agreeing with each label
    member_labels: np.ndarray | None = None  # (n_seeds, N) consensus runs: each seed's own labels
    markers: Any | None = None  # pandas DataFrame of per-domain marker genes (stmm_core.pipeline.markers)
    obsm: dict[str, np.ndarray] = field(default_factory=dict)  # extra per-spot arrays for result.h5ad
