"""Parameter models of the graph components (pydantic only: imported at CLI start-up)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer


class RadiusGraphParams(BaseModel):
    """Connect spots closer than a radius (inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radius: float | None = Field(
        None,
        gt=0.0,
        description="radius in full-resolution pixels; None = radius_factor × median nearest-neighbour distance",
    )
    radius_factor: float = Field(
        1.5,
        gt=0.0,
        le=100.0,
        description="used when radius is None; 1.5 gives the 6 neighbours of a Visium hex lattice "
        "(8 on a square grid; use radius = the bin size for StereoMM's 4-neighbour grid)",
    )


class KnnGraphParams(BaseModel):
    """Connect each spot to its k nearest spots, then symmetrise (union)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(6, ge=1, le=1000, description="neighbours per spot before symmetrisation")
    ties: Literal["kdtree", "graphst"] = Field(
        "kdtree",
        description="order of spots at equal distance: kdtree = the k-d tree's (O(N log N)); graphst = GraphST's "
        "(numpy argsort of each spot's exact distance row, O(N^2): Visium-size sections), which also ranks each "
        "spot's own k picks so a read-out over the nearest neighbours takes exactly them",
    )

    @model_serializer(mode="wrap")
    def _drop_new_defaults(self, handler: Any) -> dict[str, Any]:
        # left out at its default, so specs published before the setting keep their hash
        data = handler(self)
        if data.get("ties") == "kdtree":
            data.pop("ties")
        return data


class VGAEParams(BaseModel):
    """Variational graph autoencoder with a feature decoder (StereoMM's graph model, fixed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conv: Literal["gcn", "gat", "sage"] = Field("gcn", description="graph layer family of every layer")
    hidden: list[int] = Field([256], min_length=1, max_length=8, description="encoder hidden widths")
    latent: int = Field(32, ge=1, le=4096, description="latent width L")
    activation: Literal["elu", "relu"] = Field("elu", description="activation between graph layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden encoder layer")
    kl_weight: float = Field(
        1e-3, ge=0.0, le=1e3, description="weight of the KL term (mean over nodes of the sum over latent dims)"
    )
    decoder: Literal["feature"] = Field(
        "feature", description="feature decoder (graph layers, linear output) trained with MSE"
    )
    dec: bool = Field(False, description="run DEC refinement (Xie et al. 2016) after the autoencoder stage")
    dec_weight: float = Field(0.1, ge=0.0, le=1e3, description="weight γ of KL(P‖Q) in the DEC stage")
    dec_alpha: float = Field(1.0, gt=0.0, le=100.0, description="Student-t degrees of freedom α")
    dec_update_interval: int = Field(10, ge=1, le=10_000, description="steps between target (P) updates")
    dec_tol: float = Field(
        1e-3, ge=0.0, le=1.0, description="stop DEC when fewer than this fraction of labels change"
    )
    decoder_covariates: list[Literal["log_library"]] = Field(
        [],
        max_length=1,
        description="per-spot covariates the decoder receives beside the latent code, so the latent need not "
        "encode them (scVI-style); log_library = the spot's standardised log total counts",
    )

    @field_validator("decoder_covariates", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        # --set graph.decoder_covariates=log_library: one name is a list of one
        return [v] if isinstance(v, str) else v

    @model_serializer(mode="wrap")
    def _drop_new_defaults(self, handler: Any) -> dict[str, Any]:
        # left out at its default, so specs published before the setting keep their hash
        data = handler(self)
        if not data.get("decoder_covariates"):
            data.pop("decoder_covariates", None)
        return data

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 or h > 65536 for h in v):
            raise ValueError("hidden widths must be between 1 and 65536")
        return v


class ContrastiveGAEParams(BaseModel):
    """Graph autoencoder trained with feature reconstruction plus a DGI-style local contrastive loss
    (the GraphST family: Long et al., Nat. Commun. 2023; defaults are GraphST's published ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conv: Literal["gcn", "gat", "sage"] = Field("gcn", description="graph layer family")
    latent: int = Field(64, ge=1, le=4096, description="latent width L of the one-layer graph encoder")
    recon_weight: float = Field(10.0, ge=0.0, le=1e4, description="weight of the feature-reconstruction MSE")
    contrastive_weight: float = Field(
        1.0, ge=0.0, le=1e4,
        description="weight of the contrastive loss (each spot vs its neighbourhood summary, against "
        "row-shuffled features), summed over both directions",
    )
    corruption: Literal["per_epoch", "fixed"] = Field(
        "per_epoch", description="reshuffle the negative features every step, or draw one permutation once"
    )
    embedding: Literal["reconstruction", "latent"] = Field(
        "reconstruction",
        description="what the pipeline clusters: the graph-smoothed reconstruction (GraphST) or the latent code",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the input features")
    adjacency: Literal["gcn", "graphst"] = Field(
        "gcn",
        description="gcn layers' propagation matrix: gcn = D^-1/2 (A+I) D^-1/2 (Kipf & Welling); graphst = "
        "D^-1/2 A D^-1/2 + I, degrees without the self loop, so each spot keeps weight 1 for itself (GraphST)",
    )
    bias: bool = Field(True, description="bias terms in the encoder and decoder layers (GraphST has none)")
    readout: Literal["graph", "nearest"] = Field(
        "graph",
        description="neighbourhood summary of a spot: mean over itself and its graph neighbours (graph), or over "
        "itself and its readout_k nearest graph neighbours (nearest; GraphST: its own 3 nearest spots, which the "
        "symmetric 3-NN graph holds)",
    )
    readout_k: int = Field(3, ge=1, le=1000, description="neighbours of readout='nearest'")

    @model_serializer(mode="wrap")
    def _drop_new_defaults(self, handler: Any) -> dict[str, Any]:
        # settings added after specs were published are left out at their defaults, so those specs keep their hash
        data = handler(self)
        if data.get("readout") == "graph":
            data.pop("readout")
            if data.get("readout_k") == 3:
                data.pop("readout_k")
        return data
