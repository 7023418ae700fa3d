"""Pipeline specs: frozen pydantic models, unknown keys rejected, parameters validated by each
component's own schema, canonical JSON with a stable hash.

A spec names components through the local catalogue only; loading a spec never imports or executes code
that came with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from stmm_core import __version__
from stmm_core.errors import SpecError

#: Version of the spec format this stmm reads and writes.
SPEC_VERSION = 1

#: For each pipeline type: slot name → (component kind, required?).
PIPELINE_SLOTS: dict[str, dict[str, tuple[str, bool]]] = {
    "graph-fusion": {
        "image": ("image_encoder", False),
        "gene": ("gene_encoder", True),
        "fusion": ("fusion", True),
        "builder": ("graph_builder", True),
        "graph": ("graph_model", True),
        "task": ("task", True),
    },
    # Two-stage image <-> expression model (Magic, fixed): stage 1 trains image + gene encoders contrastively
    # (plus image-gene matching through the fusion module); stage 2 trains the expression decoder on the
    # (loaded, frozen) stage-1 image encoder.
    "magic": {
        "image": ("image_encoder", True),
        "gene": ("gene_encoder", True),
        "contrastive": ("objective", True),
        "fusion": ("fusion", False),
        "matching": ("objective", False),
        "decoder": ("decoder", True),
    },
}

#: Methods a component class must have to fill a slot of a pipeline family (checked when a spec is validated,
#: so 'stmm compose' never writes a spec that 'stmm fit' rejects after reading the data).
PIPELINE_NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "magic": {"image": ("prepare",), "gene": ("tokenize",)},
}
NEEDS_TEXT = {"magic": {"image": "a token image encoder (e.g. magic-vit)",
                        "gene": "a token gene encoder (e.g. performer)"}}

#: Sub-modules of a magic pipeline's stage-1 model, and those a stage-2 model contains.
MAGIC_STAGE1_MODULES = ("image", "gene", "contrastive", "fusion", "matching")
MAGIC_STAGE2_MODULES = ("image", "decoder")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentRef(_Frozen):
    """A component by name plus its parameters (completed with defaults once resolved)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TileSpec(_Frozen):
    """How tiles are cut around spots."""

    size: float | None = Field(None, gt=0, description="tile side in full-resolution px (None: spot diameter)")
    size_factor: float = Field(1.0, gt=0, description="multiplies the default tile side (spot diameter)")
    pad_value: int = Field(255, ge=0, le=255, description="fill for tiles crossing the image border")


class FeatureSpec(_Frozen):
    """Post-processing of encoder outputs before fusion."""

    image_pca: int | None = Field(
        64, ge=1, le=4096,
        description="PCA components kept of the z-scored image features (None: keep all encoder dims)",
    )


class DomainSpec(_Frozen):
    """Post-processing of the domain labels."""

    refine_neighbors: int = Field(
        0, ge=0, le=1000,
        description="majority vote over this many nearest spots (self included); 0 = off",
    )
    consensus: int = Field(
        1, ge=1, le=100,
        description="fit this many seeds and keep their consensus domains with a per-spot confidence; 1 = off "
        "(stmm_core.pipeline.consensus)",
    )

    @model_serializer(mode="wrap")
    def _drop_off_switches(self, handler: Any) -> dict[str, Any]:
        # consensus=1 (off) is left out, so specs written before the setting existed keep their hash
        data = handler(self)
        if data.get("consensus") == 1:
            data.pop("consensus")
        return data


class TrainSpec(_Frozen):
    """Training of fusion + graph model (full batch, or over spatial partitions)."""

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


class PipelineSpec(_Frozen):
    """A complete, validated pipeline."""

    spec_version: int = SPEC_VERSION
    stmm_version: str = __version__
    pipeline: Literal["graph-fusion", "magic"] = "graph-fusion"
    recipe: str | None = None
    note: str | None = Field(None, description="how the spec was composed, e.g. 'not a tuned recipe' (written by "
                             "stmm compose; not part of the spec hash)")
    components: dict[str, ComponentRef | None]
    tiles: TileSpec = Field(default_factory=TileSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    domains: DomainSpec = Field(default_factory=DomainSpec)
    train: Union[TrainSpec, MagicTrainSpec] = Field(default_factory=TrainSpec, union_mode="left_to_right")

    @model_validator(mode="before")
    @classmethod
    def _check_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            version = data.get("spec_version", SPEC_VERSION)
            if isinstance(version, int) and version > SPEC_VERSION:
                raise SpecError(
                    f"this spec uses format v{version} (written by stmm {data.get('stmm_version', '?')}); "
                    f"this stmm {__version__} reads up to v{SPEC_VERSION}: upgrade stmm (pip install -U stmm)"
                )
            # validate train with the pipeline's own schema, so errors name its fields (not both union members)
            schema = MagicTrainSpec if data.get("pipeline") == "magic" else TrainSpec
            from stmm_core.validation import bool_number_problems

            bad = bool_number_problems(cls, data) + bool_number_problems(schema, data.get("train"), "train.")
            if bad:
                raise SpecError(f"invalid pipeline spec: {'; '.join(bad)}")
            if not isinstance(data.get("train"), (TrainSpec, MagicTrainSpec)):
                try:
                    train = schema.model_validate(data.get("train") or {})
                except ValidationError as exc:
                    from stmm_core.validation import describe_errors

                    problems = describe_errors(exc.errors(), schema.model_fields, prefix="train.")
                    raise SpecError(f"invalid pipeline spec: {problems}") from None
                data = {**data, "train": train}
        return data

    @model_validator(mode="after")
    def _resolve_components(self) -> "PipelineSpec":
        from stmm_core.plugins import get_catalogue

        if self.pipeline != "magic" and not isinstance(self.train, TrainSpec):
            raise SpecError(f"a {self.pipeline} pipeline takes train.epochs/lr/…, not stage1/stage2 "
                            "(those are for magic pipelines)")
        slots = PIPELINE_SLOTS[self.pipeline]
        unknown = set(self.components) - set(slots)
        if unknown:
            raise SpecError(
                f"unknown component slot(s) {sorted(unknown)} for a {self.pipeline} pipeline; "
                f"slots are: {', '.join(slots)}"
            )
        catalogue = get_catalogue()
        resolved: dict[str, ComponentRef | None] = {}
        for slot, (kind, required) in slots.items():
            ref = self.components.get(slot)
            if ref is None:
                if required:
                    raise SpecError(f"the {self.pipeline} pipeline needs a '{slot}' component ({kind})")
                resolved[slot] = None
                continue
            info = catalogue.get(kind, ref.name)
            params = info.validate_params(ref.params).model_dump(mode="json")
            resolved[slot] = ComponentRef(name=info.name, params=params)
        if self.pipeline == "magic" and resolved.get("matching") is not None and resolved.get("fusion") is None:
            raise SpecError("the magic pipeline's 'matching' objective scores pairs with the 'fusion' module: "
                            "add a fusion component (e.g. token-cross-attention) or set matching to none")
        for slot, ref in resolved.items():  # a component may need another slot filled (tag "needs:<slot>")
            if ref is None:
                continue
            for tag in catalogue.get(slots[slot][0], ref.name).tags:
                need = tag.split(":", 1)[1] if tag.startswith("needs:") else None
                if need and resolved.get(need) is None:
                    raise SpecError(f"{slot} '{ref.name}' needs a component in the '{need}' slot, but the spec has none "
                                    f"(e.g. --{'encoder resnet50' if need == 'image' else need + ' …'} in stmm compose)")
        for slot, methods in PIPELINE_NEEDS.get(self.pipeline, {}).items():
            ref = resolved.get(slot)
            if ref is None:
                continue
            cls = catalogue.get(slots[slot][0], ref.name).load()
            lacking = [m for m in methods if not callable(getattr(cls, m, None))]
            if lacking:
                raise SpecError(f"the {self.pipeline} pipeline's {slot} slot needs {NEEDS_TEXT[self.pipeline][slot]}, "
                                f"not {ref.name!r} (it has no {', '.join(lacking)})")
        object.__setattr__(self, "components", resolved)
        return self

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if data.get("note") is None:  # specs without a note keep the bytes (and hashes) they always had
            data.pop("note", None)
        return data

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: the bytes that are hashed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def hash(self) -> str:
        """sha256 of the canonical JSON, excluding the stmm version (which does not change results)."""
        data = self.to_dict()
        data.pop("stmm_version", None)
        data.pop("note", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def pretty_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def with_overrides(self, overrides: dict[str, Any]) -> "PipelineSpec":
        """Return a new spec with dotted ``slot.param`` / ``train.x`` / ``tiles.x`` overrides applied."""
        data = self.to_dict()
        apply_overrides(data, overrides)
        return parse_spec(data)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Apply ``{"fusion.dim": 32, "train.epochs": 10}`` style overrides to a raw spec dict in place."""
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not rest:
            raise SpecError(f"override {key!r} must look like component.param=value (e.g. fusion.dim=32)")
        if head in ("train", "tiles", "features", "domains"):
            node = data.setdefault(head, {})
            *parents, leaf = rest.split(".")
            for part in parents:  # nested settings, e.g. train.stage1.epochs (magic pipelines)
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {} if child is None else child
                    if not isinstance(child, dict):
                        raise SpecError(f"override {key!r}: {head}.{part} is not a group of settings")
                    node[part] = child
                node = child
            node[leaf] = value
            continue
        comps = data.setdefault("components", {})
        if head not in comps or comps[head] is None:
            slots = ", ".join(k for k, v in comps.items() if v is not None)
            raise SpecError(f"override {key!r}: this spec has no '{head}' component (it has: {slots}, train, tiles)")
        if rest == "name":
            comps[head] = {"name": value, "params": {}}
        else:
            comps[head].setdefault("params", {})[rest] = value


def parse_override_value(text: str) -> Any:
    """``--set a.b=VALUE``: VALUE is parsed as JSON when possible (numbers, lists, true/null), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(data: dict[str, Any]) -> PipelineSpec:
    """Validate a raw spec dict; every problem becomes one :class:`SpecError` line."""
    if not isinstance(data, dict):
        raise SpecError(f"a pipeline spec must be a JSON object, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        from stmm_core.validation import describe_errors

        problems = describe_errors(exc.errors(), PipelineSpec.model_fields)
        raise SpecError(f"invalid pipeline spec: {problems}") from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a spec JSON file."""
    path = Path(path)
    if path.is_dir():
        hint = (f"{path / 'spec.json'} is its spec" if (path / "spec.json").is_file()
                else "give the spec .json file written by 'stmm compose -o'")
        raise SpecError(f"{path} is a folder, not a spec file; {hint}")
    if not path.is_file():
        raise SpecError(f"spec file not found: {path} (create one with 'stmm compose … -o {path.name}')")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not valid JSON: {exc}") from None
    return parse_spec(data)
