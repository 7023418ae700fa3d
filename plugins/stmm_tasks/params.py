"""Parameter models of the task components (pydantic only: imported at CLI start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GMMParams(BaseModel):
    """Gaussian mixture on a PCA of the embedding (a pure-Python stand-in for R mclust)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pca: int | None = Field(20, ge=1, le=4096, description="PCA components taken first; None = no PCA")
    covariance: Literal["tied", "full", "diag", "spherical"] = Field(
        "tied", description="covariance model; tied = mclust EEE (the default of DLPFC benchmarks)"
    )
    n_init: int = Field(
        20, ge=1, le=100,
        description="EM restarts (the best likelihood is kept); with 3 the likelihood optimum was often missed",
    )
    max_iter: int = Field(300, ge=1, le=100_000, description="EM iterations per restart")
    max_fit: int | None = Field(
        200_000, ge=100, description="fit PCA + mixture on a random subsample of at most this many spots, then "
        "assign every spot (bounds time and memory at millions of bins); None = fit on all"
    )


class LeidenParams(BaseModel):
    """Leiden on a kNN graph of the embedding, with a resolution search to hit K clusters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_neighbors: int = Field(15, ge=1, le=1000, description="neighbours of the kNN graph on the embedding")
    resolution_min: float = Field(0.05, gt=0.0, le=1000.0, description="lower end of the resolution search")
    resolution_max: float = Field(2.5, gt=0.0, le=1000.0, description="upper end (extended if too low)")
    max_steps: int = Field(30, ge=1, le=200, description="bisection steps of the resolution search")
    max_fit: int | None = Field(
        50_000, ge=100, description="run Leiden on a random subsample of at most this many spots and give every "
        "other spot the majority label of its n_neighbors nearest subsampled spots (memory O(max_fit · k)); "
        "None = all spots"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "LeidenParams":
        if self.resolution_min >= self.resolution_max:
            raise ValueError("resolution_min must be smaller than resolution_max")
        return self


class KMeansParams(BaseModel):
    """k-means on the embedding (optionally after PCA)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_init: int = Field(10, ge=1, le=1000, description="k-means restarts")
    pca: int | None = Field(None, ge=1, le=4096, description="PCA components taken first; None = no PCA")
    max_fit: int | None = Field(
        200_000, ge=100, description="fit on a random subsample of at most this many spots, then assign every "
        "spot to its nearest centre; None = fit on all"
    )
