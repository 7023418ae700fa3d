"""``stmm compose``: build a validated pipeline spec from named parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer


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


def blame_sets(message: str, sets: list[str]) -> str:
    """A spec error caused by ``--set`` values, reworded to name the flag: ``--set KEY: problem`` when the message
    starts with the key, else ``--set KEY=VALUE: problem`` for the item it is about (all when unclear)."""
    for prefix in ("invalid pipeline spec: ", "override "):
        message = message.removeprefix(prefix)
    keys = [item.partition("=")[0].strip() for item in sets]
    if any(k and message.startswith((f"{k}:", f"{k!r}:")) for k in keys):
        return f"--set {message}"
    values = [item.partition("=")[2].strip() for item in sets]
    for where in (lambda k, v: message.find(f"'{k}'"), lambda k, v: message.find(k),
                  lambda k, v: message.find(f"'{v}'") if v else -1,
                  lambda k, v: message.find(k.split(".")[0]) if k.rsplit(".", 1)[-1] in message else -1):
        found = sorted((where(k, v), item) for item, k, v in zip(sets, keys, values) if k and where(k, v) >= 0)
        if found:  # the item the message names first
            return f"--set {found[0][1]}: {message}"
    return f"--set {' --set '.join(sets)}: {message}"


def with_sets(build: Callable[[dict[str, Any]], Any], sets: list[str] | None) -> Any:
    """``build(overrides)`` for the parsed ``--set`` values. ``build({})`` is checked first, so a spec error that
    appears only with the overrides is theirs: its message then names ``--set`` (the flag that fixes it)."""
    from stmm_core.errors import ComponentNotFound, SpecError

    overrides = parse_sets(sets)
    if not overrides:
        return build({})
    build({})  # the spec, recipe or encoder without --set: its own errors are reported as they are
    try:
        return build(overrides)
    except (SpecError, ComponentNotFound) as exc:
        raise SpecError(blame_sets(str(exc), list(sets or []))) from None


def compose_spec(recipe: str | None = "stereomm", slots: dict[str, str | None] | None = None,
                 sets: dict[str, Any] | None = None, *, warn=None):
    """Start from *recipe*, replace the named slots, apply ``--set`` overrides, validate
    (see :func:`stmm_core.composing.compose_spec`)."""
    from stmm_core.composing import compose_spec as _compose

    return _compose(recipe, slots, sets, warn=warn)


def compose(
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe to start from, with its tuned "
                                         "settings (stmm list --kind recipe), e.g. stereomm."),
    encoder: Optional[str] = typer.Option(None, "--encoder", "-e", help="Image encoder: a component (resnet50, "
                                          "vit, timm, stain-stats), a published encoder from 'stmm list "
                                          "--pretrained' (uni, phikon, ...), or none."),
    gene: Optional[str] = typer.Option(None, "--gene", help="Gene encoder (hvg, pca)."),
    fuse: Optional[str] = typer.Option(None, "--fuse", help="Fusion (attention, concat)."),
    builder: Optional[str] = typer.Option(None, "--builder", help="Spatial graph builder (radius, knn)."),
    graph: Optional[str] = typer.Option(None, "--graph", help="Graph model (vgae, contrastive-gae)."),
    task: Optional[str] = typer.Option(None, "--task", help="Domain clustering (gmm, leiden, kmeans)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Change one setting: component.param=value "
                                             "(repeatable), e.g. fusion.img_weight=0.3."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the spec JSON here."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the validated spec and write nothing."),
    old_image: Optional[str] = typer.Option(None, "--image", hidden=True),
) -> None:
    """Write a pipeline spec: a recipe, with components swapped or settings changed."""
    from stmm_core.errors import StmmError

    if old_image is not None:
        raise StmmError(f"compose names the image encoder with --encoder (e.g. --encoder {old_image}); --image is the "
                        "H&E image file of 'stmm fit/run'")
    slots = {"image": encoder, "gene": gene, "fusion": fuse, "builder": builder, "graph": graph, "task": task}
    if recipe is None and all(v is None for v in slots.values()):
        from stmm_core.recipes import all_recipes

        raise StmmError("name a recipe to start from (--recipe stereomm) or the components (--encoder, --gene, "
                        f"--fuse, --graph, ...); recipes: {', '.join(sorted(all_recipes()))}")

    def warn(line: str) -> None:
        typer.echo(f"stmm: warning: {line}", err=True)

    spec = with_sets(lambda o: compose_spec(recipe, slots, o, warn=warn if o or not sets else None), sets)
    text = spec.pretty_json()
    if spec.note:
        typer.echo(f"note: {spec.note}", err=True)
    if dry_run or output is None:
        typer.echo(text)
        if output is not None:
            typer.echo(f"(dry run: {output} not written) spec hash {spec.hash()[:12]}", err=True)
        return
    from stmm_core.atomic import check_output, write_text

    write_text(check_output(output, kind="file"), text + "\n")
    parts = ", ".join(f"{k}={v.name}" for k, v in spec.components.items() if v is not None)
    typer.echo(f"wrote {output} ({spec.recipe or 'custom'}: {parts}; spec hash {spec.hash()[:12]})", err=True)


def register(app: typer.Typer) -> None:
    app.command("compose")(compose)
