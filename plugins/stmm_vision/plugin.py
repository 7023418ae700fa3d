"""Registers the bundled image encoders (timm ResNet / ViT / any timm model, transformers vision models, stain
statistics). Metadata only: timm and transformers are imported on first use."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_vision.params import (
    ResNet50Params,
    StainStatsParams,
    TimmEncoderParams,
    TransformersEncoderParams,
    ViTParams,
)

IMPL = "stmm_vision.encoders:TimmImageEncoder"
HF_IMPL = "stmm_vision.hf_transformers:TransformersImageEncoder"


@hookimpl
def stmm_components():
    return [
        ComponentInfo("resnet50", "image_encoder", IMPL, ResNet50Params,
                      "ResNet-50 (timm), global-average-pooled 2048-d features", aliases=("resnet",)),
        ComponentInfo("vit", "image_encoder", IMPL, ViTParams,
                      "Vision Transformer (timm; any ViT name or hf-hub: id), pooled features + patch tokens"),
        ComponentInfo("timm", "image_encoder", IMPL, TimmEncoderParams,
                      "any timm model or hf-hub:org/name@rev, pooled features"),
        ComponentInfo("transformers", "image_encoder", HF_IMPL, TransformersEncoderParams,
                      "any transformers vision model by Hub name (org/name@rev: Phikon, Phikon-v2, ...), "
                      "class token / patch mean / pooler", aliases=("hf-vision",)),
        ComponentInfo("stain-stats", "image_encoder", "stmm_vision.stain:StainStatsEncoder", StainStatsParams,
                      "no weights: H&E colour deconvolution + per-channel statistics at several crop scales",
                      aliases=("stain",)),
    ]
