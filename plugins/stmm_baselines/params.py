"""Parameter schemas of the baseline components."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IdentityGraphParams(BaseModel):
    """No parameters: the embedding is the fused input itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageOnlyFusionParams(BaseModel):
    """No parameters: the fused features are the image features alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PropagateGraphParams(BaseModel):
    """Training-free smoothing: average each spot with its graph neighbours ``hops`` times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hops: int = Field(2, ge=0, le=64, description="rounds of neighbourhood averaging (0 = the features unchanged)")
