"""The magic family's slot table and ``train`` block (light: pydantic only; read by ``stmm list`` and spec
validation)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Two-stage image <-> expression model: stage 1 trains image + gene encoders contrastively (plus image-gene
#: matching through the fusion module); stage 2 trains the expression decoder on the (loaded, frozen) stage-1
#: image encoder.
SLOTS: dict[str, tuple[str, bool]] = {
    "image": ("image_encoder", True),
    "gene": ("gene_encoder", True),
    "contrastive": ("objective", True),
    "fusion": ("fusion", False),
    "matching": ("objective", False),
    "decoder": ("decoder", True),
}
#: Methods a component class must have to fill a slot (checked when a spec is validated).
NEEDS = {"image": ("prepare",), "gene": ("tokenize",)}
NEEDS_TEXT = {"image": "a token image encoder (e.g. magic-vit)", "gene": "a token gene encoder (e.g. performer)"}

#: Sub-modules of a magic pipeline's stage-1 model, and those a stage-2 model contains.
MAGIC_STAGE1_MODULES = ("image", "gene", "contrastive", "fusion", "matching")
MAGIC_STAGE2_MODULES = ("image", "decoder")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MagicStageSpec(_Frozen):
    """Mini-batch training of one stage of a magic pipeline (AdamW, linear warm-up then cosine, per step)."""

    epochs: int = Field(10, ge=0, le=100_000)
    batch_size: int = Field(32, ge=2, le=65_536)
    lr: float = Field(3e-4, gt=0)
    min_lr: float = Field(1e-6, ge=0, description="learning rate at the end of the cosine schedule")
    warmup_epochs: float = Field(1.0, ge=0)
    weight_decay: float = Field(0.05, ge=0, description="AdamW decay of weight matrices (not norms, biases, "
                                                       "embeddings, tokens or the temperature)")
    grad_clip: Optional[float] = Field(5.0, gt=0)
    load: tuple[str, ...] = Field((), description="sub-modules initialised from the previous stage's weights")
    freeze: tuple[str, ...] = Field((), description="sub-modules kept fixed (no gradient) in this stage")


class MagicTrainSpec(_Frozen):
    """Training of a magic pipeline: stage 1 (contrastive + matching), stage 2 (expression decoder)."""

    seed: int = Field(0, ge=0, le=2**32 - 1)
    val_fraction: float = Field(0.1, ge=0, lt=0.9, description="training spots held out for model selection")
    augment: Literal["none", "flips", "flips+color"] = Field(
        "flips+color", description="tile augmentation: dihedral flips/rotations, plus mild brightness/contrast")
    stage1: MagicStageSpec = Field(default_factory=MagicStageSpec)
    stage2: MagicStageSpec = Field(
        default_factory=lambda: MagicStageSpec(epochs=30, lr=1e-3, weight_decay=0.05, load=("image",),
                                               freeze=("image",)))

    @model_validator(mode="after")
    def _check_stages(self) -> "MagicTrainSpec":
        s1, s2 = self.stage1, self.stage2
        if s1.load:
            raise ValueError(f"stage1.load must be empty (there is no earlier stage), got {list(s1.load)}")
        bad = sorted(set(s1.freeze) - set(MAGIC_STAGE1_MODULES))
        if bad:
            raise ValueError(f"stage1.freeze: unknown module(s) {bad}; stage-1 modules are "
                             f"{', '.join(MAGIC_STAGE1_MODULES)}")
        shared = set(MAGIC_STAGE1_MODULES) & set(MAGIC_STAGE2_MODULES)
        bad = sorted(set(s2.load) - shared)
        if bad:
            raise ValueError(f"stage2.load: {bad} cannot be loaded into stage 2; it can load only "
                             f"{', '.join(sorted(shared))} from stage 1")
        bad = sorted(set(s2.freeze) - shared)
        if bad:
            raise ValueError(f"stage2.freeze: {bad} cannot be frozen; stage 2 can freeze only "
                             f"{', '.join(sorted(shared))} (the decoder is what it trains)")
        return self


def check_spec(spec) -> None:
    """Cross-slot rule: the matching objective scores pairs with the fusion module."""
    from stmm_core.errors import SpecError

    if spec.components.get("matching") is not None and spec.components.get("fusion") is None:
        raise SpecError("the magic pipeline's 'matching' objective scores pairs with the 'fusion' module: "
                        "add a fusion component (e.g. token-cross-attention) or set matching to none")
