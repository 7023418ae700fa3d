"""``stmm predict`` and ``stmm evaluate``: use a trained pipeline of any family that offers expression prediction
(``predict``) or image–expression scoring / prediction (``evaluate``); a local run folder or ``hf:org/name@rev``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli import checks


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


OFFLINE = typer.Option(False, "--offline", help="Use only the local Hub cache (same as HF_HUB_OFFLINE=1).")


def trained_pipeline(ref: str, needs: tuple[str, ...], what: str, *, offline: bool = False,
                     allow_pickle: bool = False):
    """A run folder or ``hf:org/name[@rev]`` → (trained :class:`~stmm_core.pipeline_base.Pipeline`, description),
    after checking that its family offers one of the capabilities *needs* (one message naming the family).

    A Hub reference is pulled and verified (manifest, sha256 of every file) first; a local folder is read as it
    is (run folders written by stmm 0.1.0 have no manifest and still load)."""
    from stmm_core.hub.settings import looks_like_hub_ref
    from stmm_core.pipeline_base import family_of, load_trained
    from stmm_core.spec import load_spec

    def check(folder: Path) -> None:
        fam = family_of(load_spec(folder / "spec.json"))
        if not any(fam.has(c) for c in needs):
            fam.require(needs[0], what)

    if looks_like_hub_ref(ref):
        from stmm_core.hub.remote import pull

        res = pull(ref, offline=offline or None, allow_pickle=allow_pickle,
                   warn=lambda m: typer.echo(f"stmm: warning: {m}", err=True))
        check(res.path)
        return load_trained(res.path), f"{res.repo_id}@{res.commit}"
    folder = Path(ref)
    if not (folder / "spec.json").is_file():
        from stmm_core.errors import StmmError

        why = ("not found" if not folder.exists() else "is a file, not a run folder" if folder.is_file()
               else "has no spec.json")
        raise StmmError(f"{ref} {why}: give a run folder written by 'stmm fit'/'stmm run' (the trained pipeline), or "
                        "hf:org/name@rev")
    check(folder)
    return load_trained(folder), str(ref)


def predict(
    run_dir: str = typer.Argument(..., metavar="PIPELINE", help="Run folder (e.g. written by 'stmm run magic') or "
                                                                "hf:org/name@rev."),
    image: Optional[Path] = typer.Option(None, "--image", help="H&E image (.tif/.jpg/.png…)."),
    coords: Optional[Path] = typer.Option(None, "--coords", help="Spots: table id, x, y (full-res px). "
                                                                 "Without it (and without --data): a tissue grid."),
    data: Optional[Path] = typer.Option(None, "--data", help="A section with its image instead of --image/--coords."),
    scale: Optional[float] = typer.Option(None, "--scale", callback=checks.positive, help="Full-resolution px → --image px (default 1)."),
    tile_px: Optional[float] = typer.Option(None, "--tile-px", callback=checks.positive, help="Tile side in full-res px (default: as trained)."),
    genes: Optional[list[str]] = typer.Option(None, "--gene", help="Gene to plot (repeatable; default 4 HVGs)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .h5ad (a .png with the same name is written)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the tile cache."),
    unique_ids: bool = checks.UNIQUE_IDS,
    offline: bool = OFFLINE,
) -> None:
    """Predict expression of the pipeline's genes for every spot (or a grid over the tissue)."""
    from stmm_core.atomic import check_not_input, check_output

    check_not_input(output, {"--data": data, "--image": image, "--coords": coords}, also=(".png",))
    check_output(output, kind="file")
    pipe, source = trained_pipeline(run_dir, ("expression",), "stmm predict", offline=offline)
    options = {"image": image, "coords": coords, "scale": scale, "tile_px": tile_px, "genes": genes}
    if no_cache:
        options["use_cache"] = False
    res = pipe.predict_to_file(output, data=data, options=options, log=_log)
    kind = "tissue-grid tiles" if res.get("grid") else "spots"
    tile = f" (tiles {res['tile_fullres_px']:.0f} full-res px)" if res.get("tile_fullres_px") else ""
    wrote = " and ".join(p for p in (res.get("h5ad"), res.get("png")) if p)
    typer.echo(f"predicted {res['n_genes']} genes for {res['n_spots']} {kind}{tile} with {source}; wrote {wrote}")


def evaluate(
    run_dir: str = typer.Argument(..., metavar="PIPELINE", help="Run folder (e.g. written by 'stmm run magic') or "
                                                                "hf:org/name@rev."),
    data: Path = typer.Option(..., "--data", help="Held-out section (.h5ad etc.) with image and counts."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the metrics JSON here."),
    allow_missing: bool = typer.Option(False, "--allow-missing-genes",
                                       help="Evaluate on the targets the section has (missing ones are counted) "
                                            "instead of stopping with an error."),
    itm_k: int = typer.Option(16, "--itm-k", min=0, help="Candidates re-ranked by the ITM head (0: off)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the tile cache."),
    unique_ids: bool = checks.UNIQUE_IDS,
    allow_training: bool = typer.Option(False, "--allow-training-section",
                                        help="Score a section the run was trained on (labelled 'training')."),
    offline: bool = OFFLINE,
) -> None:
    """Per-gene / per-spot Pearson and image → expression retrieval on a held-out section."""
    if output is not None:
        from stmm_core.atomic import check_not_input, check_output

        check_not_input(output, {"--data": data})
        check_output(output, kind="file")
    pipe, _ = trained_pipeline(run_dir, ("scoring", "expression"), "stmm evaluate", offline=offline)
    from stmm_core.errors import DataError, MissingGenesError

    try:
        res, lines = pipe.evaluate(data, options={"allow_missing_genes": allow_missing, "itm_k": itm_k,
                                                  "use_cache": not no_cache, "allow_training": allow_training},
                                   log=_log)
    except MissingGenesError as exc:  # a family's missing-genes error: this command has the flag for it
        text = str(exc)
        if allow_missing or "--allow-missing" in text:
            raise
        raise DataError(f"{text}; or pass --allow-missing-genes to score the targets it has (the missing ones are "
                        "counted)") from None
    if output is not None:
        from stmm_core.pipeline.outputs import write_json

        write_json(output, res)
    if as_json:
        typer.echo(json.dumps(res, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("evaluate")(evaluate)
