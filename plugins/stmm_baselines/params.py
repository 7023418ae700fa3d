"""Parameter schemas of the baseline components."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class IdentityGraphParams(BaseModel):
    """No parameters: the embedding is the fused input itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageOnlyFusionParams(BaseModel):
    """No parameters: the fused features are the image features alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
