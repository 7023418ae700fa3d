"""``stmm compose``: build a validated pipeline spec from named parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

NONE_WORDS = {"none", "off", "no", ""}


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["fusion.dim=32", "train.epochs=10"]`` → dict, values parsed as JSON when possible."""
    from stmm_core.errors import SpecError
    from stmm_core.spec import parse_override_value

    out: dict[str, Any] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r} must look like component.param=value (e.g. --set fusion.dim=32)")
        out[key.strip()] = parse_override_value(value.strip())
    return out


def compose_spec(
    recipe: str = "stereomm",
    slots: dict[str, str | None] | None = None,
    sets: dict[str, Any] | None = None,
):
    """Start from *recipe*, replace the named slots, apply ``--set`` overrides, validate."""
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import apply_overrides, parse_spec

    data = get_recipe(recipe)["spec"]
    comps = data.setdefault("components", {})
    custom = False
    for slot, name in (slots or {}).items():
        if name is None:
            continue
        custom = True
        comps[slot] = None if name.lower() in NONE_WORDS else {"name": name, "params": {}}
    if custom:
        data["recipe"] = None
    apply_overrides(data, sets or {})
    return parse_spec(data)


def compose(
    image: Optional[str] = typer.Option(None, "--image", help="Image encoder (e.g. resnet50, vit) or 'none'."),
    gene: Optional[str] = typer.Option(None, "--gene", help="Gene encoder (e.g. hvg, pca)."),
    fuse: Optional[str] = typer.Option(None, "--fuse", help="Fusion (e.g. attention, concat)."),
    builder: Optional[str] = typer.Option(None, "--builder", help="Spatial graph builder (radius, knn)."),
    graph: Optional[str] = typer.Option(None, "--graph", help="Graph model (e.g. vgae)."),
    task: Optional[str] = typer.Option(None, "--task", help="Task (gmm, leiden, kmeans)."),
    recipe: str = typer.Option("stereomm", "--recipe", help="Recipe whose parts fill the slots not given."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override: component.param=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the spec JSON here."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the validated spec and write nothing."),
) -> None:
    """Compose a pipeline from named components and write its validated spec."""
    spec = compose_spec(recipe, {"image": image, "gene": gene, "fusion": fuse, "builder": builder,
                                 "graph": graph, "task": task}, parse_sets(sets))
    text = spec.pretty_json()
    if dry_run or output is None:
        typer.echo(text)
        if output is not None:
            typer.echo(f"(dry run: {output} not written) spec hash {spec.hash()[:12]}", err=True)
        return
    from stmm_core.atomic import check_output, write_text

    write_text(check_output(output, kind="file"), text + "\n")
    parts = ", ".join(f"{k}={v.name}" for k, v in spec.components.items() if v is not None)
    typer.echo(f"wrote {output} ({parts}; spec hash {spec.hash()[:12]})", err=True)


def register(app: typer.Typer) -> None:
    app.command("compose")(compose)
