"""Plug-in discovery: entry points of the group ``stmm``, loaded one at a time.

A plug-in that fails to import (or whose hooks raise) is recorded with its name, package and error, and
skipped; every other plug-in and command keeps working. Set ``STMM_STRICT_PLUGINS=1`` to make any such
failure fatal (useful in a plug-in's own CI).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import pluggy

from stmm_core.catalogue import Catalogue, ComponentInfo
from stmm_core.errors import StmmError
from stmm_core.family import FamilyInfo, FamilyRegistry
from stmm_core.hookspecs import PROJECT, StmmHookSpec

ENTRY_POINT_GROUP = "stmm"
STRICT_ENV = "STMM_STRICT_PLUGINS"


class PluginLoadError(StmmError):
    """Raised instead of skipping a broken plug-in when ``STMM_STRICT_PLUGINS=1``."""


@dataclass
class PluginStatus:
    """One plug-in as ``stmm plugins`` reports it."""

    name: str
    package: str
    version: str
    value: str
    status: str  # "ok" | "failed"
    error: str = ""
    components: int = 0
    recipes: int = 0
    families: int = 0
    pretrained: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginRegistry:
    """The pluggy manager plus the catalogue and recipes it yields."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(StmmHookSpec)
        self.statuses: list[PluginStatus] = []
        self.catalogue = Catalogue()
        self.recipes: dict[str, dict[str, Any]] = {}
        self.families = FamilyRegistry()
        self.pretrained: dict[str, Any] = {}

    # -- discovery ------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every ``stmm`` entry point, isolating failures."""
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        seen: set[tuple[str, str]] = set()
        for ep in eps:
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else ""
            version = dist.version if dist is not None else ""
            if (ep.name, ep.value) in seen:  # the same dist visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            self._load_one(ep.name, package, version, ep.value, ep.load)

    def register_module(self, module: Any, name: str | None = None, package: str = "") -> PluginStatus:
        """Register an already imported plug-in module (tests, notebooks)."""
        name = name or getattr(module, "__name__", repr(module))
        return self._load_one(name, package, "", name, lambda: module)

    def _load_one(self, name: str, package: str, version: str, value: str, loader) -> PluginStatus:
        status = PluginStatus(name=name, package=package, version=version, value=value, status="ok")
        try:
            module = loader()
            self.pm.register(module, name=name)
            comps, recipes = self._collect(module, package or name, name)
            families, pretrained = self._collect_more(module, package or name, name)
        except Exception as exc:  # noqa: BLE001 - isolation of third-party code is the point
            try:
                plugin = self.pm.get_plugin(name)
                if plugin is not None:
                    self.pm.unregister(plugin)
            except Exception:  # noqa: BLE001
                pass
            status.status = "failed"
            status.error = f"{type(exc).__name__}: {exc}".strip()
            self.statuses.append(status)
            if _strict():
                raise PluginLoadError(
                    f"plug-in {name!r} from package {package or '?'} failed to load: {status.error} "
                    f"(unset {STRICT_ENV} to skip broken plug-ins)\n{traceback.format_exc()}"
                ) from exc
            return status
        for info in comps:
            self.catalogue.add(info)
        for recipe in recipes:
            self.recipes.setdefault(recipe["name"], recipe)
        for fam in families:
            self.families.add(fam)
        for entry in pretrained:
            self.pretrained.setdefault(entry.name, entry)
        status.components, status.recipes = len(comps), len(recipes)
        status.families, status.pretrained = len(families), len(pretrained)
        self.statuses.append(status)
        return status

    @staticmethod
    def _collect(module: Any, package: str, plugin: str) -> tuple[list[ComponentInfo], list[dict[str, Any]]]:
        comps: list[ComponentInfo] = []
        hook = getattr(module, "stmm_components", None)
        if hook is not None:
            for info in hook() or []:
                if not isinstance(info, ComponentInfo):
                    raise TypeError(f"stmm_components must return ComponentInfo objects, got {type(info)}")
                comps.append(
                    ComponentInfo(**{**info.__dict__, "package": info.package or package, "plugin": plugin})
                )
        recipes: list[dict[str, Any]] = []
        hook = getattr(module, "stmm_recipes", None)
        if hook is not None:
            for recipe in hook() or []:
                if "name" not in recipe or "spec" not in recipe:
                    raise TypeError("stmm_recipes entries need 'name' and 'spec'")
                recipes.append({**recipe, "package": package})
        return comps, recipes

    @staticmethod
    def _collect_more(module: Any, package: str, plugin: str) -> tuple[list[FamilyInfo], list[Any]]:
        families: list[FamilyInfo] = []
        hook = getattr(module, "stmm_pipeline_families", None)
        if hook is not None:
            for info in hook() or []:
                if not isinstance(info, FamilyInfo):
                    raise TypeError(f"stmm_pipeline_families must return FamilyInfo objects, got {type(info)}")
                families.append(FamilyInfo(**{**info.__dict__, "package": info.package or package,
                                              "plugin": plugin}))
        pretrained: list[Any] = []
        hook = getattr(module, "stmm_pretrained", None)
        if hook is not None:
            for entry in hook() or []:
                if not getattr(entry, "name", None):
                    raise TypeError("stmm_pretrained entries need a 'name'")
                pretrained.append(entry)
        return families, pretrained

    @property
    def failed(self) -> list[PluginStatus]:
        return [s for s in self.statuses if s.status == "failed"]


_REGISTRY: PluginRegistry | None = None


def get_registry(refresh: bool = False) -> PluginRegistry:
    """The process-wide registry, discovered on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        from stmm_core.compat import install_torchvision_hook

        install_torchvision_hook()  # third-party plug-ins may 'import timm' directly; arms the CPU-torch fix
        reg = PluginRegistry()
        reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def get_catalogue() -> Catalogue:
    return get_registry().catalogue


def get_pretrained(name: str) -> Any | None:
    """A published encoder registered through ``stmm_pretrained`` (``stmm list --pretrained``), or None."""
    return get_registry().pretrained.get(str(name).lower())
