"""Parameter models of the fusion components (pydantic only: imported at CLI start-up)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AttentionFusionParams(BaseModel):
    """Cross-modal attention fusion (StereoMM's attention module, trained and memory-efficient)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(64, ge=1, le=8192, description="projection width d of each modality (output is 2·d)")
    heads: int = Field(4, ge=1, le=256, description="attention heads; must divide dim")
    mode: Literal["cross", "gene", "image"] = Field(
        "cross",
        description="cross: gene queries image AND image queries gene (two separate attention modules); "
        "gene: only gene queries image; image: only image queries gene",
    )
    scope: Literal["neighbourhood", "global"] = Field(
        "neighbourhood",
        description="neighbourhood: a spot attends to its spatial-graph neighbours and itself (O(E)); "
        "global: a spot attends to all spots (O(N²) time, O(N) memory, as in StereoMM)",
    )
    img_weight: Union[Annotated[float, Field(ge=0.0, le=1e6)], Literal["auto"]] = Field(
        1.0,
        description="weight of the image block in the output; 'auto': chosen from the data before training "
        "(held-out R² of the image features predicting the gene features, spatially blocked CV, mapped to "
        "[0, 1]; at 0 the image is left out), recorded in metrics.json and the run's spec.json",
    )
    gene_weight: float = Field(1.0, ge=0.0, le=1e6, description="weight of the gene block in the output")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the attention output (training only)")
    balance: bool = Field(
        True,
        description="rescale the image block of the reconstruction target (train.target = inputs) to the gene block's root-mean-square "
        "norm per spot before the modality weights, so img_weight/gene_weight set each modality's share of the "
        "loss whatever the feature widths and variances (False: raw features, as published)",
    )
    chunk_size: int = Field(
        4096, ge=1, le=1_048_576, description="global scope: queries per attention chunk (bounds workspace)"
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "AttentionFusionParams":
        if self.dim % self.heads != 0:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class ConcatFusionParams(BaseModel):
    """Weighted concatenation of image and gene features (no trainable parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    img_weight: float = Field(1.0, ge=0.0, le=1e6, description="factor applied to the image features")
    gene_weight: float = Field(1.0, ge=0.0, le=1e6, description="factor applied to the gene features")
