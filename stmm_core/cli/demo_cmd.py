"""``stmm demo``: the StereoMM recipe on the embedded DLPFC sample, offline, in a few minutes on a laptop."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli import checks
from stmm_core.cli.compose_cmd import with_sets


def demo_path() -> Path:
    from stmm_core.demo.build import DEMO_PATH

    return DEMO_PATH


def demo(
    output: Path = typer.Option(Path("stmm-demo"), "-o", "--output", help="Run folder to write."),
    recipe: str = typer.Option("stereomm", "--recipe", help="Recipe to run."),
    seed: int = typer.Option(0, "--seed", callback=checks.seed),
    device: str = typer.Option("auto", "--device", callback=checks.device, help="auto | cpu | cuda"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override: component.param=value."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a recipe on the embedded DLPFC 151676 sample and report ARI against the cortical layers."""
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.pipeline_base import FitRequest, fit_spec

    from stmm_core.pipeline.outputs import check_output_dir
    from stmm_core.seeding import resolve_device

    check_output_dir(output, overwrite=True)  # before the notes below: a bad place is the only line
    resolve_device(device)
    overrides = {"train.seed": seed}
    spec = compose_spec(recipe, None, {})
    if spec.components.get("image") is not None:
        # Pretrained weights cannot be assumed offline: the demo says so and uses random init explicitly.
        overrides["image.weights"] = "random"
        typer.echo("note: demo uses a randomly initialised image encoder (offline; pretrained weights are "
                   "used with --set image.weights=pretrained when the Hub is reachable)", err=True)
    spec = with_sets(lambda o: spec.with_overrides({**overrides, **o}), sets)
    typer.echo(f"demo data: {demo_path().name} (DLPFC 151676, 10x Visium, layer labels)", err=True)
    # re-running the demo replaces its own earlier run (never other files)
    outcome = fit_spec(spec, FitRequest(data=[demo_path()], out_dir=output, device=device, progress=not quiet,
                                        overwrite=True, options={"labels": "layer"}))
    for line in outcome.lines:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
