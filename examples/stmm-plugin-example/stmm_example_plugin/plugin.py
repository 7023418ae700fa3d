"""Registration: light metadata only (pydantic), the implementation is imported on first use."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo


class WardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    linkage: Literal["ward", "average", "complete"] = Field("ward", description="linkage criterion")


@hookimpl
def stmm_components():
    return [
        ComponentInfo("ward", "task", "stmm_example_plugin.ward:WardClustering", WardParams,
                      "agglomerative (Ward) clustering of the embedding"),
    ]
