"""The zoo index of published encoders (``registry/encoders.json``), validated by pydantic.

Each entry says how a published model is loaded (timm ``hf-hub:`` with its exact keyword arguments, transformers
``from_pretrained``, or a separate package), what its embedding is and how wide, its licence and whether the
Hub repository is gated. ``verified: true`` means every field was confirmed in the publisher's own text (listed in
``sources``); ``checked`` names the fields confirmed where only some were; everything else must be checked before use.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ZooEncoder(BaseModel):
    """One published encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    title: str
    modality: Literal["image", "gene"]
    repo: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
    loader: Literal["timm", "transformers", "package"]
    model: str
    package: Optional[str] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    embedding: str
    embedding_dim: int = Field(..., ge=1)
    input_size: Optional[int] = Field(None, ge=16)
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    license: str
    gated: bool
    verified: bool = False
    checked: list[str] = Field(default_factory=list,
                               description="the fields confirmed against the publisher's own text (see sources)")
    sources: list[str] = Field(default_factory=list, description="where the checked fields were confirmed")
    notes: str = ""

    @model_validator(mode="after")
    def _verified_needs_sources(self) -> "ZooEncoder":
        if (self.verified or self.checked) and not self.sources:
            raise ValueError(f"{self.name}: verified/checked fields need the source they were confirmed in")
        unknown = sorted(set(self.checked) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"{self.name}: checked names unknown fields {unknown}")
        return self


class ZooIndex(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["stmm-zoo-v1"]
    note: str = ""
    encoders: list[ZooEncoder]


def load_zoo() -> ZooIndex:
    """The validated index; a malformed file is a clear error naming the entry."""
    from stmm_core.errors import SpecError

    raw = json.loads(resources.files("stmm_registry").joinpath("encoders.json").read_text())
    try:
        index = ZooIndex.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"registry/encoders.json is invalid: {problems}") from None
    names = [e.name for e in index.encoders]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"registry/encoders.json lists {dupes} more than once")
    return index


def get_encoder(name: str) -> ZooEncoder | None:
    for e in load_zoo().encoders:
        if e.name == name.lower():
            return e
    return None
