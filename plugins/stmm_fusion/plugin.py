"""Registers the bundled fusion modules."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_fusion.params import AttentionFusionParams, ConcatFusionParams


@hookimpl
def stmm_components():
    return [
        ComponentInfo("attention", "fusion", "stmm_fusion.attention:CrossAttentionFusion", AttentionFusionParams,
                      "trained cross-modal attention (spatial-neighbourhood or memory-efficient global) + weighted concat",
                      aliases=("cross-attention",)),
        ComponentInfo("concat", "fusion", "stmm_fusion.concat:ConcatFusion", ConcatFusionParams,
                      "weighted concatenation of image and gene features"),
    ]
