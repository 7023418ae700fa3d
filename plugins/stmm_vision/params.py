"""Parameter models of the image encoders (pydantic only: imported at CLI start-up, no torch/timm here)."""

from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _EncoderParams(BaseModel):
    """What every tile encoder takes: an optional weights checksum and the batch size (frozen, no extra keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    sha256: str | None = Field(
        None,
        description="expected sha256 of the weights file; a mismatch is an error (None = not checked, recorded)",
    )
    batch_size: int = Field(64, ge=1, le=65536, description="tiles per forward pass")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("sha256 must be 64 hex digits")
        return v.lower() if v else v


class TimmEncoderParams(_EncoderParams):
    """Any timm model as a frozen tile encoder: one pooled feature vector per tile."""

    model: str = Field(
        "resnet50",
        min_length=1,
        description="timm model name, optionally with a pretrained tag (resnet50, resnet50.tv_in1k, "
        "vit_small_patch16_224, ...), or hf-hub:org/name@revision, or local-dir:/path (a timm save_for_hf folder)",
    )
    weights: Union[Literal["pretrained", "random"], str] = Field(
        "pretrained",
        min_length=1,
        description="pretrained: the model's published weights (Hugging Face Hub, cached; an error if they cannot "
        "be obtained, never a silent fallback); random: random initialisation (seeded by the pipeline seed); "
        "a path to a local .safetensors file (timm state dict); or local-dir:/path (a timm save_for_hf folder)",
    )
    input_size: Union[int, Literal["auto"]] = Field(
        "auto",
        description="tile side fed to the network in px; auto: the native tile resolution (multiple of 16, "
        ">= 32) clamped to the model's pretrained input size (fixed-size models such as ViTs always get their "
        "pretrained size); an int builds/feeds the network at that size",
    )
    pool: Literal["default", "avg", "max", "avgmax", "token", "cls", "cls+mean"] = Field(
        "default",
        description="how the feature map / tokens are pooled to one vector: default = the model's own; "
        "avg/max/avgmax for CNNs; token (= cls, the class token) or avg (mean of patch tokens) for ViTs; "
        "cls+mean = class token concatenated with the mean of the patch tokens, class and register tokens "
        "excluded (Virchow/Virchow2's embedding, 2 x width)",
    )
    model_kwargs: dict[str, Union[bool, int, float, str, None, list[int]]] = Field(
        default_factory=dict,
        description="extra keyword arguments of timm.create_model (JSON values); layer classes as dotted paths "
        "from timm.layers or torch.nn only, e.g. {\"mlp_layer\": \"timm.layers.SwiGLUPacked\", "
        "\"act_layer\": \"torch.nn.SiLU\"}",
    )
    channels_last: bool = Field(True, description="channels-last memory format (faster CNNs on CPU and GPU)")

    @field_validator("input_size")
    @classmethod
    def _size_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 16 <= v <= 4096:
            raise ValueError("input_size must be 'auto' or an int in [16, 4096]")
        return v


class ResNet50Params(TimmEncoderParams):
    """ResNet-50 (timm), global-average-pooled 2048-d features (StereoMM's image encoder).

    ``resnet50`` loads timm's default ``resnet50.a1_in1k`` weights; ``--set image.model=resnet50.tv_in1k`` gives the
    torchvision ImageNet-1k v1 weights StereoMM used (``resnet50-19c8e357.pth``).
    """

    model: str = Field(
        "resnet50",
        min_length=1,
        description="timm ResNet name or tag, e.g. resnet50, resnet50.tv_in1k (StereoMM's torchvision weights), "
        "resnet50.a1_in1k, or hf-hub:org/name@revision",
    )


class ViTParams(TimmEncoderParams):
    """A Vision Transformer (timm): pooled features, and patch tokens via ``encode_tokens``."""

    model: str = Field(
        "vit_small_patch16_224",
        min_length=1,
        description="timm ViT name, e.g. vit_small_patch16_224, vit_base_patch16_224, "
        "deit_base_patch16_224 (Magic's DeiT weights), or hf-hub:org/name@revision",
    )


class TransformersEncoderParams(_EncoderParams):
    """A Hugging Face ``transformers`` vision model (``AutoModel``) as a frozen tile encoder."""

    model: str = Field(
        "owkin/phikon",
        min_length=3,
        description="Hub model id, optionally pinned: org/name or org/name@revision (branch, tag or commit), e.g. "
        "owkin/phikon, owkin/phikon-v2; or local-dir:/path (a save_pretrained folder with preprocessor_config.json)",
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="pretrained: the published safetensors weights (an error if they cannot be obtained); random: "
        "the architecture from config.json with random initialisation (seeded by the pipeline seed)",
    )
    sha256: str | None = Field(
        None, description="expected sha256 of model.safetensors (single-file checkpoints); a mismatch is an error"
    )
    pool: Literal["cls", "mean", "cls+mean", "pooler"] = Field(
        "cls",
        description="embedding: cls = class token of last_hidden_state; mean = mean of the patch tokens (class and "
        "register tokens excluded); cls+mean = both concatenated (2 x hidden size); pooler = the model's "
        "pooler_output",
    )
    model_kwargs: dict[str, Union[bool, int, float, str, None]] = Field(
        default_factory=dict,
        description="extra keyword arguments of from_pretrained / the config (JSON scalars only), e.g. "
        '{"add_pooling_layer": false}',
    )

    @field_validator("model_kwargs")
    @classmethod
    def _no_code(cls, v: dict) -> dict:
        banned = {"trust_remote_code", "code_revision", "use_safetensors", "revision", "local_files_only"}
        bad = sorted(banned & set(v))
        if bad:
            raise ValueError(f"{bad} cannot be set here: stmm never runs downloaded code, loads safetensors only and "
                             "pins the revision in 'model'")
        return v


class StainStatsParams(BaseModel):
    """Weight-free H&E tile encoder: colour deconvolution (H, E, residual) + per-channel statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scales: list[float] = Field(
        default_factory=lambda: [1.0, 0.5], min_length=1, max_length=8,
        description="centred crops, as fractions of the tile side, each summarised separately "
        "(1.0 = the whole tile); widen the tile with tiles.size_factor for more context",
    )
    tissue_od: float = Field(0.15, ge=0.0, le=10.0,
                             description="total optical density above which a pixel counts as tissue")
    input_size: Union[int, Literal["auto"]] = Field(
        "auto", description="tile side in px the statistics are computed on; auto: native, in [32, 64]"
    )
    batch_size: int = Field(256, ge=1, le=65536, description="tiles per batch")

    @field_validator("scales")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < s <= 1.0 for s in v):
            raise ValueError("scales must be fractions of the tile side in (0, 1]")
        return v

    @field_validator("input_size")
    @classmethod
    def _size_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 4 <= v <= 1024:
            raise ValueError("input_size must be 'auto' or an int in [4, 1024]")
        return v
