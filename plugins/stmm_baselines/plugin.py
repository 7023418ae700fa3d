"""Registers the baseline components (metadata only; torch is imported on first use)."""

from __future__ import annotations

from stmm_baselines.params import IdentityGraphParams, ImageOnlyFusionParams, PropagateGraphParams
from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo


@hookimpl
def stmm_components():
    return [
        ComponentInfo("identity", "graph_model", "stmm_baselines.identity:IdentityGraphModel", IdentityGraphParams,
                      "no graph model: the fused features are the embedding (baselines)"),
        ComponentInfo("propagate", "graph_model", "stmm_baselines.propagate:PropagateGraphModel",
                      PropagateGraphParams,
                      "no learning: the fused features averaged over each spot's graph neighbours, hops times "
                      "(the smoothed-expression baseline)"),
        ComponentInfo("image-only", "fusion", "stmm_baselines.identity:ImageOnlyFusion", ImageOnlyFusionParams,
                      "the image features alone, gene features ignored (image-only baseline)",
                      tags=("needs:image",)),
    ]
