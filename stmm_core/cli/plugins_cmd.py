"""``stmm plugins`` and ``stmm list``: what is installed (never imports an implementation)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer


def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the plug-ins found through the 'stmm' entry points, with their status."""
    from stmm_core.plugins import get_registry

    reg = get_registry()
    rows = [s.to_dict() for s in reg.statuses]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "conflicts": reg.catalogue.conflicts + reg.families.conflicts},
                              indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [6])
    for r in rows:
        if r["status"] == "ok":
            detail = f"{r['components']} components, {r['recipes']} recipes" + (
                f", {r['families']} pipeline famil{'y' if r['families'] == 1 else 'ies'}" if r["families"] else "")
        else:
            detail = f"FAILED: {r['error']}"
        pkg = f"{r['package']} {r['version']}".strip()
        typer.echo(f"{r['name']:<{width}}  {r['status']:<6}  {pkg:<18}  {detail}")
    for c in reg.catalogue.conflicts + reg.families.conflicts:
        typer.echo(f"warning: {c}", err=True)
    if reg.failed:
        typer.echo(f"{len(reg.failed)} plug-in(s) failed to load and were skipped "
                   "(set STMM_STRICT_PLUGINS=1 to make this fatal)", err=True)


def list_components(
    pattern: Optional[str] = typer.Argument(None, help="Name pattern (substring or shell wildcard)."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Only this kind: image_encoder, gene_encoder, fusion, graph_builder, "
                                                        "graph_model, decoder, objective, task, pipeline or recipe."),
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
    k = (kind or "").lower()
    want_recipes = kind is None or k in ("recipe", "recipes")
    want_families = kind is None or k in ("pipeline", "pipelines")
    families = [f for f in reg.families if want_families and _matches(f.name, pattern)]
    items = [] if k in ("recipe", "recipes", "pipeline", "pipelines") else reg.catalogue.search(pattern, kind)
    recipes = [r for n, r in sorted(reg.recipes.items()) if want_recipes and _matches(n, pattern)]
    if as_json:
        typer.echo(json.dumps({
            "pipelines": [{"name": f.name, "summary": f.summary, "package": f.package,
                           "capabilities": list(f.capabilities)} for f in families],
            "components": [i.describe() for i in items],
            "recipes": [{"name": r["name"], "summary": r.get("summary", ""), "package": r.get("package", "")}
                        for r in recipes],
        }, indent=2))
        return
    if not items and not recipes and not families:
        from stmm_core.errors import ComponentNotFound

        raise ComponentNotFound(f"no component or recipe matches {pattern!r}"
                                f"{f' of kind {kind}' if kind else ''}; run 'stmm list' to see them all "
                                "('stmm list --pretrained': the published encoders)")
    w = max([20, *(len(x.name) + 1 for x in (*families, *items)), *(len(r["name"]) + 1 for r in recipes)])
    for f in families:
        typer.echo(f"{'pipeline':<14} {f.name:<{w}} {f.package:<12} {f.summary} [{', '.join(f.capabilities)}]")
    for i in items:
        alias = f" (alias: {', '.join(i.aliases)})" if i.aliases else ""
        typer.echo(f"{i.kind:<14} {i.name:<{w}} {i.package:<12} {i.summary}{alias}")
    for r in recipes:
        typer.echo(f"{'recipe':<14} {r['name']:<{w}} {r.get('package', ''):<12} {r.get('summary', '')}")


def _matches(name: str, pattern: str | None) -> bool:
    import fnmatch

    if not pattern:
        return True
    return fnmatch.fnmatch(name, pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")


def info(
    name: str = typer.Argument(..., help="Component, recipe or published encoder name."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Only this component kind (when a name is "
                                       "used by several kinds)."),
    as_json: bool = typer.Option(False, "--json", help="The raw record (a component's JSON schema, a recipe's "
                                 "spec) as JSON."),
) -> None:
    """Show what a recipe sets, a component's parameters, or a published encoder's loading and licence."""
    from stmm_core.cli.info_format import component_text, recipe_text, zoo_text
    from stmm_core.errors import ComponentNotFound
    from stmm_core.plugins import get_pretrained, get_registry

    def show(record: Any, lines: list[str]) -> None:
        typer.echo(json.dumps(record, indent=2) if as_json else "\n".join(lines))

    zoo = get_pretrained(name) if kind is None else None
    if zoo is not None:
        record = zoo.model_dump(mode="json")
        show(record, zoo_text(record))
        return
    reg = get_registry()
    if (kind is None or kind.lower() == "pipeline") and name in reg.families:
        from stmm_core.cli.info_format import family_text

        record = reg.families.get(name).describe()
        show(record, family_text(record))
        return
    if kind is None and name in reg.recipes:
        show(reg.recipes[name], recipe_text(reg.recipes[name]))
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
        import difflib

        known = sorted({*reg.recipes, *(i.name for i in reg.catalogue), *(f.name for f in reg.families)})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ComponentNotFound(f"no component or recipe named {name!r}{hint} (run 'stmm list')")
    records = [m.describe() for m in matches]
    lines: list[str] = []
    for d in records:
        lines += ([""] if lines else []) + component_text(d)
    show(records, lines)


def _list_pretrained(pattern: Optional[str], as_json: bool) -> None:
    from stmm_core.plugins import get_registry

    rows = [e for e in get_registry().pretrained.values() if not pattern or pattern.strip("*").lower() in e.name]
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
