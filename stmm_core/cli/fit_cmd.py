"""``stmm fit`` (a spec file) and ``stmm run`` (a named recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli import checks
from stmm_core.cli.compose_cmd import with_sets


def _common(spec, data, output, n_domains, labels, seed, device, image, scale, no_cache, quiet, stage=None,
            coords=None, counts_layer=None, bin_size=None, region=None, zarr=False, overwrite=False, consensus=None,
            markers=50, batch_correct=None):
    """Fit *spec* with its family's implementation (any registered pipeline family)."""
    from stmm_core.pipeline_base import FitRequest, check_options, fit_spec

    if seed is not None:
        spec = spec.with_overrides({"train.seed": seed})
    options = {"n_domains": n_domains, "labels": labels, "image": image, "scale": scale, "stage": stage,
               "coords": coords, "counts_layer": counts_layer, "bin_size": bin_size, "region": region,
               "zarr": zarr or None, "consensus": consensus, "markers": None if markers == 50 else markers,
               "batch_correct": batch_correct}
    check_options(spec, options)  # one message naming the family for an option it does not take

    def log(msg: str) -> None:
        if not quiet:
            typer.echo(msg, err=True)

    data = list(data) if isinstance(data, (list, tuple)) else [data]
    request = FitRequest(data=data, out_dir=output, device=device, progress=not quiet, use_cache=not no_cache,
                         overwrite=overwrite, options=options, log=log)
    outcome = fit_spec(spec, request)
    if outcome.rank != 0:  # data-parallel helper process: rank 0 reports and writes
        return
    for line in outcome.lines:
        typer.echo(line)


DATA = typer.Option(..., "--data", help=".h5ad, Space Ranger folder, or counts table (with --image/--scale). "
                                        "Several sections (--data A B C or repeated): one joint fit (graph-fusion: "
                                        "one graph per section, shared genes, one labelling; magic: training set).")
MORE = typer.Argument(None, hidden=True, metavar="[MORE_DATA]...", callback=checks.more_data,
                      help="Further sections after --data (multi-section pipelines).")
STAGE = typer.Option(None, "--stage", min=1, max=2, help="Multi-stage pipelines (magic): train only this stage.")
OUT = typer.Option(..., "-o", "--output", help="Run folder to write.")
def _parse_k(value: Optional[str]) -> Optional[str | int]:
    """``-k``: a whole number ≥ 1, or ``auto`` (chosen from the data; see stmm_core.pipeline.auto_k)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise typer.BadParameter(f"{value!r}: give a whole number of domains (e.g. -k 7) or -k auto")
    return k


K = typer.Option(None, "--n-domains", "-k", callback=_parse_k,
                 help="Number of spatial domains, or 'auto': chosen without labels (the knee of the BIC curve of "
                      "a Gaussian mixture over K = 2..15; a starting point: the candidates are printed and saved "
                      "in metrics.json). "
                      "Default: the number of --labels categories.")
LABELS = typer.Option(None, "--labels", help="obs column with ground-truth domains (reports ARI/NMI).")
SEED = typer.Option(None, "--seed", callback=checks.seed, help="Random seed (overrides train.seed).")
DEVICE = typer.Option("auto", "--device", callback=checks.device, help="auto | cpu | cuda")
IMAGE = typer.Option(None, "--image", help="H&E image file to use instead of the one in the data: the "
                                           "full-resolution TIFF (with --scale 1) or spatial/tissue_hires_image.png.")
SCALE = typer.Option(None, "--scale", callback=checks.positive,
                     help="Scale factor from full-resolution px (the unit of the spot positions) to --image px: 1 "
                          "for the full-resolution TIFF, tissue_hires_scalef from scalefactors_json.json for the "
                          "hires PNG.")
COORDS = typer.Option(None, "--coords", help="Spot positions for a counts table (or an .h5ad without "
                                             "obsm['spatial']): a table with columns id, x, y in full-resolution px, "
                                             "or a Space Ranger spatial/ folder.")
COUNTS_LAYER = typer.Option(None, "--counts-layer", help="Where an .h5ad keeps its raw counts when X is "
                                                        "normalised: a layers[] name, 'raw' for adata.raw, or 'X' to take X "
                                                        "as it is.")
BIN_SIZE = typer.Option(None, "--bin-size", help="Visium HD (Space Ranger 3 binned_outputs/): bin side in µm, 2, 8 "
                                                  "or 16 (default 8). Stereo-seq .gem: bin side in DNB (default 50).")
REGION = typer.Option(None, "--region", metavar="X0,Y0,X1,Y1", help="Visium HD: read only the bins inside this "
                                                                   "rectangle (full-resolution px), e.g. for 2 µm bins.")
ZARR = typer.Option(False, "--zarr", help="Also write result.zarr: a SpatialData store (image, spot shapes and "
                                           "the result table in one 'global' coordinate system; extra 'spatialdata').")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier run in the -o folder (whole).")
NOCACHE = typer.Option(False, "--no-cache", help="Do not read or write the image feature cache.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
SETS = typer.Option(None, "--set", help="Override: component.param=value (repeatable).")
CONSENSUS = typer.Option(None, "--consensus", min=1, max=100,
                         help="Fit N seeds (in parallel processes when cores allow) and keep their consensus domains "
                              "with a per-spot confidence (obs['stmm_domain_confidence']); --seed S uses seeds "
                              "S*N … S*N+N-1. Sets domains.consensus; --set domains.consensus_mode=embedding clusters "
                              "the seeds' embeddings together (best-likelihood mixture), domains.consensus_mode=coassoc clusters how often the seeds put two "
                              "spots together, instead of voting their labels.")
MARKERS = typer.Option(50, "--markers", min=0, max=10_000,
                       help="Top marker genes per domain (scanpy rank_genes_groups on log-normalised counts) written "
                            "to markers.csv, markers.png and result.h5ad uns['stmm_markers']; 0 = none.")
BATCH = typer.Option(None, "--batch-correct", help="With several --data sections: 'harmony' corrects the "
                     "embedding for the section before clustering (needs harmonypy, the 'multi' extra); "
                     "default none.")
NPROC = typer.Option(1, "--nproc", min=1, help="Processes (torchrun, data parallel: image encoding sharded, "
                                                "training over spatial partitions, magic stage 1 with "
                                                "DistributedDataParallel; gloo on CPU, NCCL on GPU).")


def _relaunch(nproc: int) -> None:
    """With ``--nproc N > 1`` outside torchrun: re-run this command under torchrun in N processes and exit
    with their status (a user error in any process: its one-line message, exit code 2)."""
    import os

    from stmm_core.cli.main import current_argv
    from stmm_core.distributed.launch import launch

    if nproc <= 1 or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return
    argv, skip = [], False
    for a in current_argv():
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        argv.append(a)
    raise typer.Exit(launch(nproc, argv))


def _gather(data: list[Path], more: list[Path] | None) -> list[Path]:
    """Every ``--data`` section, each once: the same file twice would fit one section as two (its spots counted
    twice in the joint graph-fusion fit, or in both magic's training set and itself)."""
    from stmm_core.errors import StmmError

    paths = list(data) + list(more or [])
    seen: dict[Path, Path] = {}
    for p in paths:
        key = Path(p).expanduser().resolve()
        if key in seen:
            same = "" if str(seen[key]) == str(p) else f" (also as {seen[key]})"
            raise StmmError(f"--data {p} is given twice{same}; give each section once")
        seen[key] = Path(p)
    return paths


def fit(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Spec JSON written by 'stmm compose', a saved "
                                     "pipeline folder, or hf:org/name@rev (its spec)."),
    more: Optional[list[Path]] = MORE,
    data: list[Path] = DATA,
    output: Path = OUT,
    n_domains: Optional[str] = K,
    labels: Optional[str] = LABELS,
    seed: Optional[int] = SEED,
    device: str = DEVICE,
    image: Optional[Path] = IMAGE,
    scale: Optional[float] = SCALE,
    coords: Optional[Path] = COORDS,
    counts_layer: Optional[str] = COUNTS_LAYER,
    bin_size: Optional[float] = BIN_SIZE,
    region: Optional[str] = REGION,
    zarr: bool = ZARR,
    sets: Optional[list[str]] = SETS,
    no_cache: bool = NOCACHE,
    quiet: bool = QUIET,
    stage: Optional[int] = STAGE,
    nproc: int = NPROC,
    overwrite: bool = OVERWRITE,
    consensus: Optional[int] = CONSENSUS,
    markers: int = MARKERS,
    batch_correct: Optional[str] = BATCH,
    unique_ids: bool = checks.UNIQUE_IDS,
) -> None:
    """Fit a pipeline spec on a section (or sections); write the model, metrics and plots to a folder."""
    from stmm_core.hub.settings import looks_like_hub_ref
    from stmm_core.spec import load_spec

    _relaunch(nproc)

    if looks_like_hub_ref(str(spec_path)) or (spec_path.is_dir() and (spec_path / "manifest.json").is_file()):
        from stmm_core.cli.hub_cmd import resolve_pipeline

        loaded, source, seconds = resolve_pipeline(str(spec_path))  # verified; its spec is re-fitted here
        typer.echo(f"spec from {source} ({seconds:.3f} s)", err=True)
        spec = loaded.spec
    else:
        spec = load_spec(spec_path)
    spec = with_sets(lambda o: spec.with_overrides(o) if o else spec, sets)
    _common(spec, _gather(data, more), output, n_domains, labels, seed, device, image, scale, no_cache, quiet,
            stage, coords, counts_layer, bin_size, region, zarr, overwrite, consensus, markers, batch_correct)


def run(
    recipe: str = typer.Argument(..., help="Recipe name (see 'stmm list'), e.g. stereomm or magic."),
    more: Optional[list[Path]] = MORE,
    data: list[Path] = DATA,
    output: Path = OUT,
    n_domains: Optional[str] = K,
    labels: Optional[str] = LABELS,
    seed: Optional[int] = SEED,
    device: str = DEVICE,
    image: Optional[Path] = IMAGE,
    scale: Optional[float] = SCALE,
    coords: Optional[Path] = COORDS,
    counts_layer: Optional[str] = COUNTS_LAYER,
    bin_size: Optional[float] = BIN_SIZE,
    region: Optional[str] = REGION,
    zarr: bool = ZARR,
    sets: Optional[list[str]] = SETS,
    no_cache: bool = NOCACHE,
    quiet: bool = QUIET,
    stage: Optional[int] = STAGE,
    nproc: int = NPROC,
    overwrite: bool = OVERWRITE,
    consensus: Optional[int] = CONSENSUS,
    markers: int = MARKERS,
    batch_correct: Optional[str] = BATCH,
    unique_ids: bool = checks.UNIQUE_IDS,
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Swap the recipe's image encoder: a component "
                                          "or a published encoder from 'stmm list --pretrained' (e.g. uni)."),
) -> None:
    """Run a registered recipe with its defaults (plus --set overrides)."""
    from stmm_core.cli.compose_cmd import compose_spec

    _relaunch(nproc)
    if Path(recipe).exists():  # a spec file or a run folder: 'stmm fit' takes those
        from stmm_core.errors import StmmError

        kind = "run folder" if Path(recipe).is_dir() else "file"
        raise StmmError(f"stmm run takes a recipe name ('stmm list --kind recipe'); {recipe} is a {kind}: fit its "
                        f"spec with 'stmm fit {recipe} --data … -o …'")

    def warn(line: str) -> None:
        typer.echo(f"stmm: warning: {line}", err=True)

    spec = with_sets(lambda o: compose_spec(recipe, {"image": encoder} if encoder else None, o,
                                            warn=warn if o or not sets else None), sets)
    if spec.note:
        typer.echo(f"note: {spec.note}", err=True)
    _common(spec, _gather(data, more), output, n_domains, labels, seed, device, image, scale, no_cache, quiet,
            stage, coords, counts_layer, bin_size, region, zarr, overwrite, consensus, markers, batch_correct)


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
    app.command("run")(run)
