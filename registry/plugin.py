"""Registers the recipes of the zoo index through the same hook a third-party package uses."""

from __future__ import annotations

from stmm_core import hookimpl


@hookimpl
def stmm_recipes():
    from stmm_registry import recipes

    return recipes()


@hookimpl
def stmm_pretrained():
    from stmm_registry.zoo import load_zoo

    return list(load_zoo().encoders)
