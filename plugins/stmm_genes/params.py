"""Parameter models of the gene feature extractors (pydantic only: imported at CLI start-up)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class HVGParams(BaseModel):
    """Library-size normalisation → log1p → highly variable genes → z-score (→ optional PCA)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_top_genes: int = Field(
        2000, ge=1, le=1_000_000, description="genes kept; all genes are kept when the section has fewer"
    )
    flavor: Literal["seurat", "cell_ranger", "seurat_v3", "variance", "moran"] = Field(
        "seurat",
        description="gene ranking: seurat / cell_ranger = scanpy highly_variable_genes (normalised dispersion) "
        "on the log-normalised data; seurat_v3 = variance of the raw counts standardised by a loess fit of "
        "variance on mean (scanpy's seurat_v3 without scikit-misc); variance = highest variance of the log-normalised values; "
        "moran = spatially variable genes, highest Moran's I of the log-normalised values on a 6-NN graph of the spots",
    )
    target_sum: float | None = Field(
        1e4, gt=0, description="counts per spot after library-size normalisation (None = median library size "
        "of the fitting section, then reused as is)"
    )
    log1p: bool = Field(True, description="apply log(1 + x) after normalisation")
    scale: Literal["zscore", "std", "none"] = Field(
        "zscore",
        description="zscore: per-gene standardisation with the fitted mean/std (zero-variance genes: std = 1); "
        "std: divide by the fitted std (n - 1) without centring, values stay non-negative (scanpy "
        "scale(zero_center=False), GraphST); none: the (log-)normalised values",
    )
    max_value: float | None = Field(
        10.0, gt=0, description="clip the scaled values to [-max_value, max_value] (None = no clipping)"
    )
    pca: int | None = Field(
        None, ge=1, le=10_000, description="PCA components after scaling (None = keep the genes)"
    )
    regress_depth: bool = Field(
        False, description="remove from every output feature its least-squares fit on log library size (per "
        "section, at transform time): sequencing depth no longer drives a component; depth that differs "
        "between tissue layers goes with it"
    )

    @model_serializer(mode="wrap")
    def _drop_new_defaults(self, handler: Any) -> dict[str, Any]:
        # left out at its default, so specs published before the setting keep their hash
        data = handler(self)
        if data.get("regress_depth") is False:
            data.pop("regress_depth")
        return data


class PCAGeneParams(HVGParams):
    """As ``hvg``, followed by PCA (50 components by default)."""

    pca: int | None = Field(50, ge=1, le=10_000, description="PCA components after scaling (None = keep the genes)")
