"""Named recipes (partial specs) from the zoo index and from plug-ins."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from stmm_core.errors import ComponentNotFound


def all_recipes() -> dict[str, dict[str, Any]]:
    from stmm_core.plugins import get_registry

    return get_registry().recipes


def get_recipe(name: str) -> dict[str, Any]:
    """The recipe dict (``name``, ``summary``, ``spec``) or a clear error with suggestions."""
    recipes = all_recipes()
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ComponentNotFound(f"unknown recipe {name!r}{hint or '.'} Available: "
                                f"{', '.join(sorted(recipes)) or 'none'}")
    return copy.deepcopy(recipes[name])
