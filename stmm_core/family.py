"""Pipeline families as plug-ins: the metadata a package registers for a *kind* of pipeline.

A pipeline family is what the ``pipeline`` field of a spec names (``graph-fusion``, ``magic``, or a third-party
one). It is registered like a component, through the ``stmm_pipeline_families`` hook of a module listed under
the ``stmm`` entry points, and the registration is metadata only (nothing heavy is imported)::

    # my_package/plugin.py
    from stmm_core import hookimpl
    from stmm_core.family import FamilyInfo

    @hookimpl
    def stmm_pipeline_families():
        return [FamilyInfo(
            name="my-family", summary="one line for 'stmm list'",
            slots={"image": ("image_encoder", True), "gene": ("gene_encoder", False)},
            train_schema="my_package.settings:MyTrainSpec",     # pydantic model: the spec's 'train' block
            impl="my_package.pipeline:MyPipeline",             # a stmm_core.pipeline_base.Pipeline subclass
            capabilities=("expression",))]

Where things go: a new *component* (encoder, fusion, graph model …) is a :class:`~stmm_core.catalogue.ComponentInfo`
from ``stmm_components``; a new *kind of pipeline* (its own training loop, its own run folder) is a
:class:`FamilyInfo` from ``stmm_pipeline_families`` whose ``impl`` subclasses
:class:`stmm_core.pipeline_base.Pipeline`. The core never names a family: ``stmm fit``, ``stmm run``,
``stmm embed``/``predict``/``evaluate`` and the benchmark suites look the family up here and call the interface.

This module imports no torch (``stmm list`` reads it).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from stmm_core.errors import SpecError, StmmError

#: The optional abilities a trained pipeline may offer (each one method of :class:`stmm_core.pipeline_base.Pipeline`).
CAPABILITIES: dict[str, str] = {
    "embedding": "a per-spot embedding (n_spots × d): domains, 'stmm embed', the domains suite",
    "expression": "expression predicted from the image (n_spots × n_genes + gene names): 'stmm predict', the "
                  "expression suite",
    "scoring": "image–expression matching scores (n_spots × n_spots): 'stmm evaluate', the retrieval suite",
}


def _load_ref(ref: Any, what: str, owner: str) -> Any:
    """``"module:attr"`` → the object (a class given directly is returned as is)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        from stmm_core.errors import MissingDependency

        raise MissingDependency(f"pipeline family {owner!r}: its {what} ({ref}) could not be imported: {exc}") from None
    except AttributeError:
        raise StmmError(f"pipeline family {owner!r}: {module} has no {attr!r} (broken registration of its {what}; "
                        "report it to the plug-in's authors)") from None


@dataclass(frozen=True)
class FamilyInfo:
    """What a plug-in registers for one pipeline family.

    Attributes:
        name: the value of a spec's ``pipeline`` field.
        summary: one line for ``stmm list``.
        slots: slot name → (component kind, required?), in build order.
        impl: ``"module:Class"`` of the :class:`~stmm_core.pipeline_base.Pipeline` subclass, imported on use.
        train_schema: the pydantic model of the spec's ``train`` block, or ``"module:Class"`` (a light module).
        capabilities: a subset of :data:`CAPABILITIES`.
        needs: slot → methods the component class in that slot must have (checked when a spec is validated).
        needs_text: slot → what to put there, for the error message (e.g. ``"a token image encoder (magic-vit)"``).
        check: optional ``"module:function"`` called with the resolved spec for cross-slot rules; raises
            :class:`~stmm_core.errors.SpecError`.
        fit_options: the ``stmm fit`` options this family takes besides ``--data``/``-o``/``--seed``/``--set``
            (e.g. ``"n_domains"``, ``"image"``); the others are refused with one message naming the family.
        run_files: the files of a saved pipeline folder, in writing order (the manifest hashes those present;
            ``README.md`` is added by the core).
        required_files: those a saved pipeline must hold (a pulled folder without one is refused).
        trained_slots: the slots whose weights ``model.safetensors`` holds, one key prefix each (default: all).
        notes: benchmark suite → one line for its report when the family's rows are in it.
        package, plugin: filled in by the plug-in manager.
    """

    name: str
    summary: str
    slots: dict[str, tuple[str, bool]]
    impl: str
    train_schema: Any
    capabilities: tuple[str, ...] = ()
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    needs_text: dict[str, str] = field(default_factory=dict)
    check: str | None = None
    fit_options: tuple[str, ...] = ()
    run_files: tuple[str, ...] = ()
    required_files: tuple[str, ...] = ("spec.json",)
    trained_slots: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)
    package: str = ""
    plugin: str = ""

    def __post_init__(self) -> None:
        from stmm_core.interfaces import KINDS

        if not self.name or not isinstance(self.name, str):
            raise ValueError("a pipeline family needs a name")
        if ":" not in self.impl:
            raise ValueError(f"pipeline family {self.name!r}: impl must be 'module:Class', got {self.impl!r}")
        for slot, entry in self.slots.items():
            if not (isinstance(entry, tuple) and len(entry) == 2 and entry[0] in KINDS):
                raise ValueError(f"pipeline family {self.name!r}: slot {slot!r} must be (kind, required) with a kind "
                                 f"in {KINDS}, got {entry!r}")
        bad = sorted(set(self.capabilities) - set(CAPABILITIES))
        if bad:
            raise ValueError(f"pipeline family {self.name!r}: unknown capabilities {bad}; known: {sorted(CAPABILITIES)}")
        bad = sorted(set(self.needs) - set(self.slots))
        if bad:
            raise ValueError(f"pipeline family {self.name!r}: needs names unknown slots {bad}")

    # -- lazy parts --------------------------------------------------------------------------------
    def schema(self) -> type:
        """The pydantic model of the ``train`` block."""
        return _load_ref(self.train_schema, "train schema", self.name)

    def load(self) -> type:
        """The :class:`~stmm_core.pipeline_base.Pipeline` subclass (imports the implementation)."""
        return _load_ref(self.impl, "implementation", self.name)

    def checker(self) -> Callable[[Any], None] | None:
        return None if self.check is None else _load_ref(self.check, "spec check", self.name)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str, what: str) -> None:
        """One clear error when this family lacks *capability* (*what*: the command or suite asking)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        if capability not in self.capabilities:
            offers = ", ".join(self.capabilities) or "none"
            raise StmmError(f"{what} needs a pipeline with the '{capability}' capability ({CAPABILITIES[capability]}); "
                            f"the {self.name!r} pipeline family does not offer it (it offers: {offers})")

    def describe(self) -> dict[str, Any]:
        """JSON-able description (``stmm list --json``, ``stmm info FAMILY``)."""
        schema = self.train_schema
        try:
            train = self.schema().model_json_schema()
        except Exception as exc:  # noqa: BLE001 - a broken schema is shown, not fatal
            train = {"error": str(exc)}
        return {"name": self.name, "kind": "pipeline", "summary": self.summary, "impl": self.impl,
                "train_schema": schema if isinstance(schema, str) else f"{schema.__module__}:{schema.__qualname__}",
                "slots": {s: {"kind": k, "required": r, **({"needs": list(self.needs[s])} if s in self.needs else {})}
                          for s, (k, r) in self.slots.items()},
                "capabilities": list(self.capabilities), "fit_options": list(self.fit_options),
                "package": self.package, "plugin": self.plugin, "train": train}


class FamilyRegistry:
    """Registered pipeline families by name (first registration wins; later ones are reported as conflicts)."""

    def __init__(self) -> None:
        self._items: dict[str, FamilyInfo] = {}
        self.conflicts: list[str] = []

    def add(self, info: FamilyInfo) -> None:
        if info.name in self._items:
            prev = self._items[info.name]
            self.conflicts.append(f"pipeline/{info.name} from {info.package or info.plugin} ignored: already "
                                  f"registered by {prev.package or prev.plugin}")
            return
        self._items[info.name] = info

    def get(self, name: str) -> FamilyInfo:
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(f"unknown pipeline {name!r}{hint} Installed pipeline families: "
                            f"{', '.join(sorted(self._items)) or 'none'} (a family comes from a plug-in package; "
                            "'stmm list --kind pipeline')")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda i: i.name))

    def __len__(self) -> int:
        return len(self._items)


def get_family(name: str) -> FamilyInfo:
    """The registered family *name* (one :class:`SpecError` naming the installed ones otherwise)."""
    from stmm_core.plugins import get_registry

    return get_registry().families.get(name)


def require_capability(spec_or_family: Any, capability: str, what: str) -> FamilyInfo:
    """The family of a spec (or a family name), checked to offer *capability*."""
    name = spec_or_family if isinstance(spec_or_family, str) else getattr(spec_or_family, "pipeline")
    fam = get_family(name)
    fam.require(capability, what)
    return fam
