"""The ``train`` block of a graph-fusion spec (light: pydantic only)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class TrainSpec(BaseModel):
    """Training of fusion + graph model (full batch, or over spatial partitions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(600, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)
    dec_epochs: int = Field(0, ge=0, description="extra epochs of DEC refinement (graph.params.dec must be on)")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    batch: Literal["full", "auto", "partition"] = Field(
        "auto", description="full batch, or mini-batches over spatial partitions with an exact k-hop halo "
        "(stmm_core.pipeline.minibatch); auto = partition when full batch would not fit in memory")
    partition_size: int = Field(50_000, ge=16, le=10_000_000, description="core spots per spatial partition")
    partition_above: Optional[int] = Field(
        500_000, ge=1, description="auto: also partition when the section has more spots than this")
    accumulate: bool = Field(
        True, description="partition mode: accumulate gradients over all partitions and step once per epoch "
        "(the full-batch gradient); false = one optimiser step per partition")
    target: Literal["inputs", "gene", "image", "concat"] = Field(
        "inputs", description="what the graph model reconstructs (stmm_core.pipeline.target): inputs = the "
        "features the fusion reads at the fusion's modality weights (img_weight, gene_weight, balance); gene, "
        "image = those features alone; concat = [image | gene] unweighted")

    @model_serializer(mode="wrap")
    def _drop_default_target(self, handler: Any) -> dict[str, Any]:
        # the default target (inputs) is left out, so specs written before the setting existed keep their hash
        data = handler(self)
        if data.get("target") == "inputs":
            data.pop("target")
        return data


#: slot → (component kind, required?)
SLOTS: dict[str, tuple[str, bool]] = {
    "image": ("image_encoder", False),
    "gene": ("gene_encoder", True),
    "fusion": ("fusion", True),
    "builder": ("graph_builder", True),
    "graph": ("graph_model", True),
    "task": ("task", True),
}
