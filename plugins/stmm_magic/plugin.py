"""Registers the Magic components (metadata only: torch/timm are imported on first use)."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_magic.params import (
    AlbefContrastiveParams,
    ItmParams,
    MagicViTParams,
    PerformerGeneEncoderParams,
    QueryDecoderParams,
    StainBankMLPParams,
    TokenFusionParams,
)


@hookimpl
def stmm_components():
    return [
        ComponentInfo("performer", "gene_encoder", "stmm_magic.gene_encoder:PerformerGeneEncoder",
                      PerformerGeneEncoderParams,
                      "scBERT-style: binned expression tokens + gene-name embedding + Performer (FAVOR+) + pooling",
                      aliases=("scbert",), tags=("magic",)),
        ComponentInfo("magic-vit", "image_encoder", "stmm_magic.image_encoder:MagicViT", MagicViTParams,
                      "fine-tunable timm ViT: pooled feature + patch tokens (any timm name or hf-hub:)",
                      tags=("magic",)),
        ComponentInfo("stain-bank-mlp", "image_encoder", "stmm_magic.feature_bank:StainBankMLP",
                      StainBankMLPParams,
                      "frozen weight-free bank (stain statistics + texture on nested crops, z-scored on the training "
                      "tiles) -> trainable MLP: pooled feature + one token (Magic's CPU encoder)", tags=("magic",)),
        ComponentInfo("albef-itc", "objective", "stmm_magic.contrastive:AlbefContrastive", AlbefContrastiveParams,
                      "image-gene InfoNCE: projection heads, learnable clamped temperature, momentum encoders, "
                      "queues, distillation (ALBEF)", aliases=("infonce",), tags=("magic",)),
        ComponentInfo("itm", "objective", "stmm_magic.itm:ImageGeneMatching", ItmParams,
                      "image-gene matching on the fusion module, hard negatives from tempered similarities",
                      tags=("magic",)),
        ComponentInfo("token-cross-attention", "fusion", "stmm_magic.fusion:TokenCrossAttentionFusion",
                      TokenFusionParams,
                      "gene tokens: self-attention, cross-attention to image patch tokens, feed-forward",
                      tags=("magic",)),
        ComponentInfo("gene-query-decoder", "decoder", "stmm_magic.decoder:GeneQueryDecoder", QueryDecoderParams,
                      "image tokens -> expansion MLP -> transformer decoder over learned gene queries -> "
                      "log1p expression", tags=("magic",)),
    ]


@hookimpl
def stmm_pipeline_families():
    from stmm_core.family import FamilyInfo
    from stmm_magic.settings import NEEDS, NEEDS_TEXT, SLOTS

    return [FamilyInfo(
        name="magic",
        summary="two-stage image <-> expression model: contrastive image/gene encoders (+ matching), then an "
                "expression decoder on the image encoder",
        slots=SLOTS,
        impl="stmm_magic.family:MagicPipeline",
        train_schema="stmm_magic.settings:MagicTrainSpec",
        capabilities=("embedding", "expression", "scoring"),
        needs=NEEDS, needs_text=NEEDS_TEXT,
        check="stmm_magic.settings:check_spec",
        fit_options=("stage",),
        run_files=("spec.json", "magic.json", "stage1.safetensors", "stage2.safetensors", "metrics.json",
                   "loss_stage1.png", "loss_stage2.png"),
        required_files=("spec.json", "magic.json"),
        notes={"domains": "magic: stage 1 is trained on the evaluated section itself (unsupervised, no labels), then "
                          "the concatenated image and gene embeddings are clustered by GMM.",
               "retrieval": "magic: top1/top5 rank the contrastive image-gene similarity; top1_decoder/top5_decoder "
                            "score its stage-2 prediction like hest-ridge (same rule, comparable to hest-ridge's "
                            "top1/top5)."},
    )]
