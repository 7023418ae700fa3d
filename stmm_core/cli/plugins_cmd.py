"""``stmm plugins`` and ``stmm list``: what is installed (never imports an implementation)."""

from __future__ import annotations

import json
from typing import Optional

import typer


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the plug-ins found through the 'stmm' entry points, with their status."""
    from stmm_core.plugins import get_registry

    reg = get_registry()
    rows = [s.to_dict() for s in reg.statuses]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "conflicts": reg.catalogue.conflicts}, indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [6])
    for r in rows:
        if r["status"] == "ok":
            detail = f"{r['components']} components, {r['recipes']} recipes"
        else:
            detail = f"FAILED: {r['error']}"
        pkg = f"{r['package']} {r['version']}".strip()
        typer.echo(f"{r['name']:<{width}}  {r['status']:<6}  {pkg:<18}  {detail}")
    for c in reg.catalogue.conflicts:
        typer.echo(f"warning: {c}", err=True)
    if reg.failed:
        typer.echo(f"{len(reg.failed)} plug-in(s) failed to load and were skipped "
                   "(set STMM_STRICT_PLUGINS=1 to make this fatal)", err=True)


def list_components(
    pattern: Optional[str] = typer.Argument(None, help="Name pattern (substring or shell wildcard)."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Only this kind, e.g. image_encoder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    pretrained: bool = typer.Option(False, "--pretrained", help="List the published encoders of the zoo index "
                                                                "(licence, gating, embedding size)."),
) -> None:
    """List registered components (and recipes)."""
    if pretrained:
        _list_pretrained(pattern, as_json)
        return
    from stmm_core.plugins import get_registry

    reg = get_registry()
    items = reg.catalogue.search(pattern, kind)
    recipes = [] if kind else [r for n, r in sorted(reg.recipes.items())
                               if not pattern or pattern.strip("*") in n]
    if as_json:
        typer.echo(json.dumps({
            "components": [i.describe() for i in items],
            "recipes": [{"name": r["name"], "summary": r.get("summary", ""), "package": r.get("package", "")}
                        for r in recipes],
        }, indent=2))
        return
    if not items and not recipes:
        from stmm_core.errors import ComponentNotFound

        raise ComponentNotFound(f"no component or recipe matches {pattern!r}"
                                f"{f' of kind {kind}' if kind else ''}; run 'stmm list' to see them all")
    for i in items:
        alias = f" (alias: {', '.join(i.aliases)})" if i.aliases else ""
        typer.echo(f"{i.kind:<14} {i.name:<12} {i.package:<12} {i.summary}{alias}")
    for r in recipes:
        typer.echo(f"{'recipe':<14} {r['name']:<12} {r.get('package', ''):<12} {r.get('summary', '')}")


def info(
    name: str = typer.Argument(..., help="Component or recipe name."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k"),
) -> None:
    """Show a component's parameters (JSON schema) or a recipe's spec."""
    from stmm_core.errors import ComponentNotFound
    from stmm_core.plugins import get_registry

    from stmm_registry.zoo import get_encoder

    zoo = get_encoder(name) if kind is None else None
    if zoo is not None:
        typer.echo(json.dumps(zoo.model_dump(mode="json"), indent=2))
        return
    reg = get_registry()
    if kind is None and name in reg.recipes:
        typer.echo(json.dumps(reg.recipes[name], indent=2))
        return
    matches = [i for i in reg.catalogue if i.name == name or name in i.aliases]
    if kind:
        matches = [reg.catalogue.get(kind, name)]
    if not matches:
        from stmm_core.interfaces import KINDS

        for k in KINDS:  # raises with suggestions for the most likely kind
            close = reg.catalogue.search(name[:3], k)
            if close:
                reg.catalogue.get(k, name)
        raise ComponentNotFound(f"no component or recipe named {name!r}; run 'stmm list'")
    typer.echo(json.dumps([m.describe() for m in matches], indent=2))


def _list_pretrained(pattern: Optional[str], as_json: bool) -> None:
    from stmm_registry.zoo import load_zoo

    rows = [e for e in load_zoo().encoders if not pattern or pattern.strip("*").lower() in e.name]
    if as_json:
        typer.echo(json.dumps({"pretrained": [e.model_dump(mode="json") for e in rows]}, indent=2))
        return
    for e in rows:
        gate = "gated" if e.gated else "open"
        check = "" if e.verified else "  (unverified)"
        typer.echo(f"{e.modality:<6} {e.name:<14} {e.loader:<12} {e.embedding_dim:>5}-d  {e.license:<16} {gate:<6} "
                   f"{e.repo}{check}")


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("list")(list_components)
    app.command("info")(info)
