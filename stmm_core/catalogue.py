"""The component catalogue: registration is metadata, the implementation is imported on first use."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from stmm_core.errors import ComponentNotFound, SpecError
from stmm_core.interfaces import KINDS


@dataclass(frozen=True)
class ComponentInfo:
    """What a plug-in registers for one component.

    Attributes:
        name: the name users type (``resnet50``, ``attention``…), unique within its kind.
        kind: one of :data:`stmm_core.interfaces.KINDS`.
        impl: ``"module.path:ClassName"``, imported on first use only.
        params: the pydantic model validating this component's parameters.
        summary: one line for ``stmm list``.
        aliases: other accepted names.
        package: distribution that provides it (filled in by the plug-in manager).
        plugin: entry-point name that registered it (filled in by the plug-in manager).
    """

    name: str
    kind: str
    impl: str
    params: type[BaseModel]
    summary: str = ""
    aliases: tuple[str, ...] = ()
    package: str = ""
    plugin: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"component {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if ":" not in self.impl:
            raise ValueError(f"component {self.name!r}: impl must be 'module:Class', got {self.impl!r}")

    def load(self) -> type:
        """Import and return the implementation class."""
        module, _, attr = self.impl.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            from stmm_core.errors import MissingDependency

            raise MissingDependency(
                f"component {self.kind}/{self.name} (from {self.package or 'unknown package'}) could not be "
                f"imported: {exc}. Install its dependencies (pip install {exc.name or '…'})."
            ) from None
        try:
            return getattr(mod, attr)
        except AttributeError:
            from stmm_core.errors import StmmError

            raise StmmError(
                f"component {self.kind}/{self.name}: {module} has no {attr!r} (broken registration in "
                f"{self.package or self.plugin or 'its plug-in'}; report it to the plug-in's authors)"
            ) from None

    def validate_params(self, params: dict[str, Any] | None) -> BaseModel:
        """Validate *params* with this component's own schema; errors name the component."""
        from stmm_core.validation import bool_number_problems

        bad = bool_number_problems(self.params, params or {})
        if bad:
            raise SpecError(f"invalid parameters for {self.kind} '{self.name}': {'; '.join(bad)}")
        try:
            return self.params.model_validate(params or {})
        except ValidationError as exc:
            from stmm_core.validation import describe_errors

            problems = describe_errors(exc.errors(), self.params.model_fields)
            known = ", ".join(self.params.model_fields)
            raise SpecError(
                f"invalid parameters for {self.kind} '{self.name}': {problems} (known parameters: {known})"
            ) from None

    def build(self, params: dict[str, Any] | BaseModel | None = None) -> Any:
        """Validate parameters and instantiate the component."""
        model = params if isinstance(params, BaseModel) else self.validate_params(params)
        return self.load()(model)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (used by ``stmm list --json`` and ``stmm info``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "aliases": list(self.aliases),
            "impl": self.impl,
            "package": self.package,
            "plugin": self.plugin,
            "params": self.params.model_json_schema(),
        }


class Catalogue:
    """All registered components, by kind and name."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], ComponentInfo] = {}
        self._aliases: dict[tuple[str, str], str] = {}
        self.conflicts: list[str] = []

    def add(self, info: ComponentInfo) -> None:
        key = (info.kind, info.name)
        if key in self._items:
            prev = self._items[key]
            self.conflicts.append(
                f"{info.kind}/{info.name} from {info.package or info.plugin} ignored: "
                f"already registered by {prev.package or prev.plugin}"
            )
            return
        self._items[key] = info
        for alias in info.aliases:
            self._aliases.setdefault((info.kind, alias), info.name)

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda i: (KINDS.index(i.kind), i.name)))

    def __len__(self) -> int:
        return len(self._items)

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._items if k == kind)

    def get(self, kind: str, name: str) -> ComponentInfo:
        """Return the component or raise :class:`ComponentNotFound` with close-match suggestions."""
        if kind not in KINDS:
            raise ComponentNotFound(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        name = self._aliases.get((kind, name), name)
        try:
            return self._items[(kind, name)]
        except KeyError:
            pass
        candidates = self.names(kind)
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        elsewhere = [k for (k, n) in self._items if n == name]
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        if elsewhere:
            msg += f" ({name!r} is {_a(elsewhere[0])}, not {_a(kind)})"
        msg += (f"{'' if msg.endswith('?') else '.'} Available: {', '.join(candidates) or 'none'} "
                f"(run 'stmm list --kind {kind}').")
        raise ComponentNotFound(msg)

    def search(self, pattern: str | None = None, kind: str | None = None) -> list[ComponentInfo]:
        """Components whose name matches a shell-style *pattern* (substring if it has no wildcard)."""
        if kind is not None and kind not in KINDS:
            raise ComponentNotFound(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        out = []
        for info in self:
            if kind and info.kind != kind:
                continue
            if pattern:
                pat = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
                if not (fnmatch.fnmatch(info.name, pat) or any(fnmatch.fnmatch(a, pat) for a in info.aliases)):
                    continue
            out.append(info)
        return out


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (``an image_encoder``, ``a task``)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
