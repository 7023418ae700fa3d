"""``stmm predict`` and ``stmm evaluate``: use a trained image → expression run (magic pipeline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli import checks


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _magic():
    """The magic pipeline package (a bundled plug-in), with a clear error when it is not installed."""
    from stmm_core.errors import MissingDependency

    try:
        import stmm_magic.evaluate
        import stmm_magic.predict  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"the magic pipeline (package stmm_magic) is not importable ({exc}); "
                                "reinstall stmm") from None
    return stmm_magic


def predict(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="Run folder written by 'stmm run magic'."),
    image: Optional[Path] = typer.Option(None, "--image", help="H&E image (.tif/.jpg/.png…)."),
    coords: Optional[Path] = typer.Option(None, "--coords", help="Spots: table id, x, y (full-res px). "
                                                                 "Without it (and without --data): a tissue grid."),
    data: Optional[Path] = typer.Option(None, "--data", help="A section with its image instead of --image/--coords."),
    scale: Optional[float] = typer.Option(None, "--scale", callback=checks.positive, help="Full-resolution px → --image px (default 1)."),
    tile_px: Optional[float] = typer.Option(None, "--tile-px", callback=checks.positive, help="Tile side in full-res px (default: as trained)."),
    genes: Optional[list[str]] = typer.Option(None, "--gene", help="Gene to plot (repeatable; default 4 HVGs)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .h5ad (a .png with the same name is written)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the tile cache."),
) -> None:
    """Predict expression of the run's target genes for every spot (or a grid over the tissue)."""
    from stmm_core.atomic import check_output

    check_output(output, kind="file")
    m = _magic()
    res = m.predict.predict_to_file(run_dir, output, image=image, scale=scale, coords=coords, data=data,
                                    tile_px=tile_px, genes=genes, use_cache=not no_cache, log=_log)
    kind = "tissue-grid tiles" if res["grid"] else "spots"
    typer.echo(f"predicted {res['n_genes']} genes for {res['n_spots']} {kind} "
               f"(tiles {res['tile_fullres_px']:.0f} full-res px); wrote {res['h5ad']} and {res['png']}")


def evaluate(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="Run folder written by 'stmm run magic'."),
    data: Path = typer.Option(..., "--data", help="Held-out section (.h5ad etc.) with image and counts."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the metrics JSON here."),
    allow_missing: bool = typer.Option(False, "--allow-missing-genes",
                                       help="Evaluate on the targets the section has (missing ones are counted) "
                                            "instead of stopping with an error."),
    itm_k: int = typer.Option(16, "--itm-k", min=0, help="Candidates re-ranked by the ITM head (0: off)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the tile cache."),
    allow_training: bool = typer.Option(False, "--allow-training-section",
                                        help="Score a section the run was trained on (labelled 'training')."),
) -> None:
    """Per-gene / per-spot Pearson and image → expression retrieval on a held-out section."""
    if output is not None:
        from stmm_core.atomic import check_output

        check_output(output, kind="file")
    m = _magic()
    res = m.evaluate.evaluate_run(run_dir, data, allow_missing_genes=allow_missing, itm_k=itm_k,
                                  use_cache=not no_cache, log=_log, allow_training=allow_training)
    if output is not None:
        from stmm_core.pipeline.outputs import write_json

        write_json(output, res)
    if as_json:
        typer.echo(json.dumps(res, indent=2, sort_keys=True, default=str))
    else:
        for line in m.evaluate.summary_lines(res):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("evaluate")(evaluate)
