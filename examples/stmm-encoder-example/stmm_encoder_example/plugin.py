"""Registration: light metadata only (pydantic). ``stmm list`` and ``stmm info tiny-cnn`` read this without
importing torch; the encoder class is imported on first use."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo


class TinyCNNParams(BaseModel):
    """Parameters of the example encoder. A spec stores them in full, so they must be JSON values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Union[str] = Field(
        "random", min_length=1,
        description="random: random initialisation, seeded by the pipeline seed; or a path to a .safetensors "
                    "state dict (never a pickle); 'pretrained' needs a published checkpoint, which this example "
                    "does not have, so it is an error")
    width: int = Field(32, ge=4, le=512, description="channels of the last conv layer = feature width")
    input_size: int = Field(64, ge=16, le=1024, description="tile side (px) the encoder is fed; stmm resizes "
                                                            "every tile to it")
    batch_size: int = Field(128, ge=1, le=65536, description="tiles per forward pass")

    @field_validator("weights")
    @classmethod
    def _no_pickle(cls, v: str) -> str:
        if v.endswith((".bin", ".pt", ".pth", ".ckpt")):
            raise ValueError("weights must be 'random' or a .safetensors file (pickled checkpoints are never loaded)")
        return v


@hookimpl
def stmm_components():
    return [
        ComponentInfo("tiny-cnn", "image_encoder", "stmm_encoder_example.encoder:TinyCNNEncoder", TinyCNNParams,
                      "example plug-in: a 3-layer CNN, global-average-pooled features (random or local weights)"),
    ]
