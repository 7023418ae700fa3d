"""pluggy hook specifications: the whole contract between stmm and a plug-in package.

A plug-in package declares an entry point in the group ``stmm`` pointing at a module that implements
some of these hooks, e.g.::

    [project.entry-points.stmm]
    my_plugin = "my_package.plugin"

    # my_package/plugin.py  (keep it light: no torch import here)
    from stmm_core import hookimpl
    from stmm_core.catalogue import ComponentInfo

    @hookimpl
    def stmm_components():
        return [ComponentInfo(name="my-encoder", kind="image_encoder",
                              impl="my_package.encoder:MyEncoder", params=MyParams)]

A new *kind of pipeline* (its own training loop and run folder) is registered by ``stmm_pipeline_families``
(:class:`stmm_core.family.FamilyInfo`; its implementation subclasses :class:`stmm_core.pipeline_base.Pipeline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.catalogue import ComponentInfo
    from stmm_core.family import FamilyInfo

PROJECT = "stmm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class StmmHookSpec:
    """Hooks a plug-in may implement."""

    @hookspec
    def stmm_components(self) -> "list[ComponentInfo]":
        """Return the components this plug-in provides (metadata only; nothing heavy imported)."""

    @hookspec
    def stmm_recipes(self) -> "list[dict[str, Any]]":
        """Return named recipes: ``{"name", "summary", "spec": {...}}`` dicts (a partial pipeline spec)."""

    @hookspec
    def stmm_pipeline_families(self) -> "list[FamilyInfo]":
        """Return the pipeline families this plug-in provides (metadata only; see :mod:`stmm_core.family`)."""

    @hookspec
    def stmm_pretrained(self) -> "list[Any]":
        """Return published encoders (objects with ``name``, ``modality``, ``loader``, ``model``, ``kwargs``,
        ``embedding``, ``embedding_dim``, ``license``, ``gated``, ``repo``, ``title``, ``package``, ``verified``
        and ``model_dump()``), listed by ``stmm list --pretrained`` and usable as ``--encoder NAME``."""
