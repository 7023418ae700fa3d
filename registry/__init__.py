"""The stmm zoo index: one small declarative JSON file per named recipe (installed as ``stmm_registry``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def recipes() -> list[dict[str, Any]]:
    """All recipe files shipped in ``registry/recipes``."""
    out = []
    for entry in sorted(resources.files(__name__).joinpath("recipes").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            out.append(json.loads(entry.read_text()))
    return out
