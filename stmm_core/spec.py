"""Pipeline specs: frozen pydantic models, unknown keys rejected, parameters validated by each
component's own schema, canonical JSON with a stable hash.

A spec names components through the local catalogue only; loading a spec never imports or executes code
that came with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_serializer, model_validator

from stmm_core import __version__
from stmm_core.errors import SpecError

#: Version of the spec format this stmm reads and writes.
SPEC_VERSION = 1

#: The family of a spec without a ``pipeline`` field (every spec written by stmm 0.1.0 names its family).
DEFAULT_PIPELINE = "graph-fusion"


def family_slots(pipeline: str) -> dict[str, tuple[str, bool]]:
    """Slot name → (component kind, required?) of a registered pipeline family."""
    from stmm_core.family import get_family

    return dict(get_family(pipeline).slots)


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
    consensus_mode: Literal["vote", "embedding", "coassoc"] = Field(
        "vote",
        description="how the consensus seeds are combined: 'vote' = Hungarian-aligned majority vote of their labels; "
        "'embedding' = the task + refinement on their embeddings side by side (stmm_core.pipeline.consensus_embed); "
        "'coassoc' = spectral clustering of how often the seeds put two spots together "
        "(stmm_core.pipeline.consensus_coassoc)",
    )

    @model_serializer(mode="wrap")
    def _drop_off_switches(self, handler: Any) -> dict[str, Any]:
        # consensus=1 (off) is left out, so specs written before the setting existed keep their hash
        data = handler(self)
        if data.get("consensus") == 1:
            data.pop("consensus")
        if data.get("consensus_mode") == "vote":  # the default, left out for the same reason
            data.pop("consensus_mode")
        return data


class PipelineSpec(_Frozen):
    """A complete, validated pipeline."""

    spec_version: int = SPEC_VERSION
    stmm_version: str = __version__
    pipeline: str = Field(DEFAULT_PIPELINE, description="the pipeline family (a registered plug-in; 'stmm list "
                          "--kind pipeline')")
    recipe: str | None = None
    note: str | None = Field(None, description="how the spec was composed, e.g. 'not a tuned recipe' (written by "
                             "stmm compose; not part of the spec hash)")
    components: dict[str, ComponentRef | None]
    tiles: TileSpec = Field(default_factory=TileSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    domains: DomainSpec = Field(default_factory=DomainSpec)
    #: validated with the family's own schema (FamilyInfo.train_schema)
    train: SerializeAsAny[BaseModel]

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
            # validate train with the family's own schema, so errors name its fields
            from stmm_core.family import get_family

            pipeline = data.get("pipeline", DEFAULT_PIPELINE)
            if not isinstance(pipeline, str):
                raise SpecError(f"invalid pipeline spec: pipeline must be a family name, got {pipeline!r}")
            schema = get_family(pipeline).schema()
            from stmm_core.validation import bool_number_problems

            bad = bool_number_problems(cls, data) + bool_number_problems(schema, data.get("train"), "train.")
            if bad:
                raise SpecError(f"invalid pipeline spec: {'; '.join(bad)}")
            train = data.get("train")
            if isinstance(train, BaseModel) and not isinstance(train, schema):
                train = train.model_dump(mode="json")
            if not isinstance(train, schema):
                try:
                    train = schema.model_validate(train or {})
                except ValidationError as exc:
                    from stmm_core.validation import describe_errors

                    problems = describe_errors(exc.errors(), schema.model_fields, prefix="train.")
                    raise SpecError(f"invalid pipeline spec: {problems}") from None
                data = {**data, "train": train}
        return data

    @model_validator(mode="after")
    def _resolve_components(self) -> "PipelineSpec":
        from stmm_core.family import get_family
        from stmm_core.plugins import get_catalogue

        family = get_family(self.pipeline)
        slots = family.slots
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
        for slot, ref in resolved.items():  # a component may need another slot filled (tag "needs:<slot>")
            if ref is None:
                continue
            for tag in catalogue.get(slots[slot][0], ref.name).tags:
                need = tag.split(":", 1)[1] if tag.startswith("needs:") else None
                if need and resolved.get(need) is None:
                    raise SpecError(f"{slot} '{ref.name}' needs a component in the '{need}' slot, but the spec has none "
                                    f"(e.g. --{'encoder resnet50' if need == 'image' else need + ' …'} in stmm compose)")
        for slot, methods in family.needs.items():
            ref = resolved.get(slot)
            if ref is None:
                continue
            cls = catalogue.get(slots[slot][0], ref.name).load()
            lacking = [m for m in methods if not callable(getattr(cls, m, None))]
            if lacking:
                want = family.needs_text.get(slot, "a component with " + ", ".join(methods))
                raise SpecError(f"the {self.pipeline} pipeline's {slot} slot needs {want}, "
                                f"not {ref.name!r} (it has no {', '.join(lacking)})")
        object.__setattr__(self, "components", resolved)
        check = family.checker()
        if check is not None:
            check(self)
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
