"""Parameter models of the Magic components (pydantic only: imported by the plug-in registration).

Every model forbids unknown keys, so a typo in a spec is an error naming the component.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerformerGeneEncoderParams(_Params):
    """scBERT-style gene encoder: binned expression tokens + gene-identity embedding + Performer."""

    n_genes: int = Field(256, ge=2, le=50_000, description="input gene tokens per spot")
    gene_selection: Literal["hvg", "mean"] = Field(
        "hvg", description="how the input genes are chosen on the training sections (ignored if 'genes' is set)")
    genes: Optional[list[str]] = Field(None, description="explicit input gene names (overrides n_genes)")
    n_bins: int = Field(5, ge=1, le=100, description="non-zero expression bins; tokens 0..n_bins plus a mask token")
    binning: Literal["log2", "scbert"] = Field(
        "log2", description="log2: token = min(ceil(log2(1+x)), n_bins), zero stays 0; "
                            "scbert: token = min(floor(log2(1+x)), n_bins) (counts of 1 fall in bin 0)")
    target_sum: float = Field(1e4, gt=0, description="library-size normalisation before binning")
    dim: int = Field(64, ge=8, le=2048, description="token width")
    depth: int = Field(2, ge=1, le=24)
    heads: int = Field(4, ge=1, le=64)
    dim_head: int = Field(16, ge=4, le=256)
    ff_mult: int = Field(4, ge=1, le=16)
    attention: Literal["favor", "elu"] = Field(
        "favor", description="favor: FAVOR+ positive random features (softmax kernel); elu: elu(x)+1 feature map")
    nb_features: Optional[int] = Field(None, ge=4, description="random features (default dim_head·ln dim_head)")
    redraw_interval: int = Field(1000, ge=0, description="redraw random features every N training calls (0: never)")
    pooling: Literal["attention", "mean"] = Field("attention", description="pooling head over gene tokens")
    out_dim: int = Field(128, ge=4, le=4096, description="pooled output width")
    dropout: float = Field(0.0, ge=0, lt=1)
    gene_embedding_file: Optional[str] = Field(
        None, description="optional table (gene name + vector columns, e.g. gene2vec text) to initialise the "
                          "gene-identity embedding by name")
    freeze_gene_embedding: bool = Field(False, description="keep the gene-identity embedding fixed")
    pretrain_counts: Optional[list[str]] = Field(
        None, description="count tables (spots x genes .tsv/.tsv.gz, header = gene names, e.g. HER2ST ST-cnts) on "
                          "which the encoder is pre-trained by masked-expression modelling before stage 1; never "
                          "list a section you evaluate on")
    pretrain_epochs: int = Field(0, ge=0, le=10_000, description="masked-expression pre-training epochs (0: none)")
    pretrain_mask: float = Field(0.15, gt=0, lt=1, description="fraction of detected-or-not gene tokens masked")
    pretrain_lr: float = Field(1e-3, gt=0)

    @model_serializer(mode="wrap")
    def _drop_pretraining_when_off(self, handler: Any) -> dict[str, Any]:
        # no pre-training (the default) is left out, so specs written before the setting existed keep their hash
        data = handler(self)
        if not self.pretrain_epochs:
            for key in ("pretrain_counts", "pretrain_epochs", "pretrain_mask", "pretrain_lr"):
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _check(self) -> "PerformerGeneEncoderParams":
        if self.genes is not None and len(set(self.genes)) != len(self.genes):
            raise ValueError("genes must be unique")
        return self


class MagicViTParams(_Params):
    """A timm ViT returning pooled features and patch tokens, fine-tunable (built through stmm_vision)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str = Field("vit_tiny_patch16_224", min_length=1,
                       description="timm ViT name, hf-hub:org/name@revision or local-dir:/path")
    weights: str = Field(
        "random", min_length=1,
        description="pretrained (the model's published weights through the Hugging Face Hub; a clear error "
                    "offline), random (seeded by the pipeline seed), a local .safetensors file, or local-dir:/path")
    sha256: Optional[str] = Field(None, description="expected sha256 of the weights file (None: not checked)")
    img_size: int = Field(112, ge=16, le=1024, description="input side in px (tiles are resized to it; the "
                                                           "position embeddings are built for it)")
    pool: Literal["token", "avg"] = Field("token", description="pooled feature: class token or mean of patches")
    trainable: bool = Field(True, description="fine-tune the encoder in stage 1")


class StainBankMLPParams(_Params):
    """Frozen weight-free feature bank (stain statistics + texture on nested crops) → trainable MLP projection."""

    scales: list[float] = Field(
        default_factory=lambda: [1.0, 0.5, 0.25], min_length=1, max_length=8,
        description="centred crops (fractions of the tile side) summarised separately; with tiles.size_factor=2 "
                    "scale 1.0 is the spot's neighbourhood and 0.5 the spot")
    texture: bool = Field(True, description="add mean and sd of the gradient magnitude (H, E, OD) per crop")
    tissue_od: float = Field(0.15, ge=0.0, le=10.0, description="optical density above which a pixel is tissue")
    img_size: int = Field(64, ge=8, le=1024, description="tile side in px the statistics are computed on")
    hidden: list[int] = Field(default_factory=lambda: [256], description="hidden widths of the projection MLP")
    out_dim: int = Field(128, ge=4, le=4096, description="pooled feature / token width")
    dropout: float = Field(0.1, ge=0, lt=1)
    trainable: bool = Field(True, description="train the MLP in stage 1 (the bank is never trained)")


class AlbefContrastiveParams(_Params):
    """Image–gene contrastive loss with projection heads, learnable temperature, queues, distillation."""

    embed_dim: int = Field(128, ge=4, le=4096, description="shared embedding width of the projection heads")
    temperature: float = Field(0.07, gt=0, description="initial temperature")
    temperature_min: float = Field(0.01, gt=0)
    temperature_max: float = Field(0.5, gt=0)
    queue_size: int = Field(256, ge=0, description="feature queue length (0: in-batch negatives only)")
    momentum: float = Field(0.995, ge=0, le=1, description="EMA coefficient of the momentum encoders and heads")
    alpha: float = Field(0.4, ge=0, le=1, description="weight of the momentum model's soft targets")
    alpha_warmup_steps: int = Field(0, ge=0, description="ramp alpha up linearly over this many steps "
                                                         "(0: one epoch, as ALBEF)")
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "AlbefContrastiveParams":
        if not self.temperature_min <= self.temperature <= self.temperature_max:
            raise ValueError("temperature must lie in [temperature_min, temperature_max]")
        return self


class ItmParams(_Params):
    """Image–gene matching on the fusion module with negatives drawn from the contrastive similarities."""

    hard_negatives: bool = Field(True, description="draw negatives ∝ softmax(similarity / temperature); "
                                                   "False: uniformly among the other items")
    weight: float = Field(1.0, ge=0)


class TokenFusionParams(_Params):
    """Gene tokens attend to themselves and to image patch tokens (self, cross, feed-forward) × depth."""

    dim: int = Field(128, ge=8, le=4096)
    depth: int = Field(2, ge=1, le=24)
    heads: int = Field(4, ge=1, le=64)
    ff_mult: int = Field(4, ge=1, le=16)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "TokenFusionParams":
        if self.dim % self.heads:
            raise ValueError("dim must be divisible by heads")
        return self


class QueryDecoderParams(_Params):
    """Image tokens → expansion layers → transformer decoder over learned gene queries → target genes."""

    n_targets: int = Field(300, ge=1, le=50_000, description="target genes (ignored if 'targets' is set)")
    target_rule: Literal["mean_expression", "hvg"] = Field(
        "mean_expression", description="how targets are chosen on the training sections: highest mean of "
                                       "log1p-normalised expression (sections weighted equally), or most variable")
    targets: Optional[list[str]] = Field(None, description="explicit target gene names")
    target_sum: float = Field(1e4, gt=0, description="targets are log1p(counts / total · target_sum)")
    expansion: list[int] = Field(default_factory=lambda: [256], description="hidden widths of the expansion MLP")
    dim: int = Field(128, ge=8, le=4096)
    depth: int = Field(2, ge=1, le=24)
    heads: int = Field(4, ge=1, le=64)
    ff_mult: int = Field(2, ge=1, le=16)
    dropout: float = Field(0.1, ge=0, lt=1)
    n_eval_hvg: int = Field(50, ge=1, description="most variable targets (on training sections) reported apart")
    linear_head: bool = Field(
        False, description="add a per-gene linear read-out of the mean image token (zero-initialised) to the "
                           "transformer's output: with a single image token cross-attention is the same for every "
                           "gene query, so gene-specific directions need this path")
    ensemble: list[Literal["ridge", "retrieval"]] = Field(
        default_factory=list,
        description="read-outs of the frozen stage-1 image embedding averaged with the decoder's prediction (equal "
                    "weights, eval mode): 'ridge' (penalty chosen by leave-one-training-section-out CV) and "
                    "'retrieval' (BLEEP-style: mean expression of the k training spots whose stage-1 gene "
                    "embeddings are nearest to the spot's image embedding, k chosen by the same CV); fitted on the "
                    "stage-2 training spots before the decoder and saved with the run (empty: the decoder alone)")

    @model_serializer(mode="wrap")
    def _drop_options_when_off(self, handler: Any) -> dict[str, Any]:
        # off (the default) is left out, so specs written before the settings existed keep their hash
        data = handler(self)
        if not self.linear_head:
            data.pop("linear_head", None)
        if not self.ensemble:
            data.pop("ensemble", None)
        return data

    @model_validator(mode="after")
    def _check(self) -> "QueryDecoderParams":
        if self.dim % self.heads:
            raise ValueError("dim must be divisible by heads")
        if self.targets is not None and len(set(self.targets)) != len(self.targets):
            raise ValueError("targets must be unique")
        if len(set(self.ensemble)) != len(self.ensemble):
            raise ValueError("ensemble: each read-out at most once")
        return self
