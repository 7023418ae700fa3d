"""``stmm fit`` (a spec file) and ``stmm run`` (a named recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli.compose_cmd import parse_sets


def _common(spec, data, output, n_domains, labels, seed, device, image, scale, no_cache, quiet):
    from stmm_core.pipeline.run import fit_to_dir, summary_lines

    if seed is not None:
        spec = spec.with_overrides({"train.seed": seed})
    metrics = fit_to_dir(spec, data, output, n_domains=n_domains, labels=labels, device=device, image=image,
                         scale=scale, use_cache=not no_cache, progress=not quiet)
    for line in summary_lines(metrics, output):
        typer.echo(line)


DATA = typer.Option(..., "--data", help=".h5ad, Space Ranger folder, or counts table (with --image/--scale).")
OUT = typer.Option(..., "-o", "--output", help="Run folder to write.")
K = typer.Option(None, "--n-domains", "-k", min=1, help="Number of spatial domains (default: from --labels).")
LABELS = typer.Option(None, "--labels", help="obs column with ground-truth domains (reports ARI/NMI).")
SEED = typer.Option(None, "--seed", min=0, help="Random seed (overrides train.seed).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
IMAGE = typer.Option(None, "--image", help="H&E image to use instead of the one in the data.")
SCALE = typer.Option(None, "--scale", help="Full-resolution px → --image px scale factor.")
NOCACHE = typer.Option(False, "--no-cache", help="Do not read or write the image feature cache.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
SETS = typer.Option(None, "--set", help="Override: component.param=value (repeatable).")


def fit(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Spec JSON written by 'stmm compose'."),
    data: Path = DATA,
    output: Path = OUT,
    n_domains: Optional[int] = K,
    labels: Optional[str] = LABELS,
    seed: Optional[int] = SEED,
    device: str = DEVICE,
    image: Optional[Path] = IMAGE,
    scale: Optional[float] = SCALE,
    sets: Optional[list[str]] = SETS,
    no_cache: bool = NOCACHE,
    quiet: bool = QUIET,
) -> None:
    """Fit a pipeline spec on a section; write result.h5ad, model, metrics and plots to a folder."""
    from stmm_core.spec import load_spec

    spec = load_spec(spec_path)
    if sets:
        spec = spec.with_overrides(parse_sets(sets))
    _common(spec, data, output, n_domains, labels, seed, device, image, scale, no_cache, quiet)


def run(
    recipe: str = typer.Argument(..., help="Recipe name (see 'stmm list'), e.g. stereomm."),
    data: Path = DATA,
    output: Path = OUT,
    n_domains: Optional[int] = K,
    labels: Optional[str] = LABELS,
    seed: Optional[int] = SEED,
    device: str = DEVICE,
    image: Optional[Path] = IMAGE,
    scale: Optional[float] = SCALE,
    sets: Optional[list[str]] = SETS,
    no_cache: bool = NOCACHE,
    quiet: bool = QUIET,
) -> None:
    """Run a registered recipe with its defaults (plus --set overrides)."""
    from stmm_core.cli.compose_cmd import compose_spec

    spec = compose_spec(recipe, None, parse_sets(sets))
    _common(spec, data, output, n_domains, labels, seed, device, image, scale, no_cache, quiet)


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
    app.command("run")(run)
