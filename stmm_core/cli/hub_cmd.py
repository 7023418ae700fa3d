"""``stmm push``, ``stmm pull`` and ``stmm embed``: pipelines on the Hugging Face Hub and re-running them.

Tokens come from ``HF_TOKEN`` and are never printed. Data (paths, commit ids) goes to stdout; warnings to stderr.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from stmm_core.cli import checks

OFFLINE = typer.Option(False, "--offline", help="Use only the local Hub cache (same as HF_HUB_OFFLINE=1).")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle",
                            help="Accept pickle files (.bin/.pt/.pth/.ckpt) in the repository; they are still "
                                 "never loaded.")


def _warn(msg: str) -> None:
    typer.echo(f"stmm: warning: {msg}", err=True)


def resolve_pipeline(ref: str, *, offline: bool = False, allow_pickle: bool = False):
    """A local pipeline folder or ``hf:org/name[@rev]`` → (LoadedPipeline, description, seconds)."""
    from stmm_core.hub.pipeline_dir import load_pipeline
    from stmm_core.hub.remote import pull
    from stmm_core.hub.settings import looks_like_hub_ref

    t0 = time.perf_counter()
    if looks_like_hub_ref(ref):
        res = pull(ref, offline=offline or None, allow_pickle=allow_pickle, warn=_warn)
        return res.pipeline, f"{res.repo_id}@{res.commit}", time.perf_counter() - t0
    loaded = load_pipeline(Path(ref), allow_pickle=allow_pickle)
    return loaded, str(ref), time.perf_counter() - t0


def push(
    folder: Path = typer.Argument(..., help="Saved pipeline folder (a 'stmm fit' run folder is one)."),
    repo: str = typer.Argument(..., metavar="ORG/NAME", help="Hub repository to create or update."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to (created if needed; "
                                                                     "default main)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    license: Optional[str] = typer.Option(None, "--license", help="Licence id for the model card (e.g. cc-by-4.0); "
                                                                  "re-renders the card and the manifest first."),
    dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="Training dataset id for the card "
                                                                        "(repeatable)."),
    message: Optional[str] = typer.Option(None, "-m", "--message", help="Commit message."),
) -> None:
    """Verify a saved pipeline and upload it to the Hub as one commit; prints repo@commit."""
    from stmm_core.hub.pipeline_dir import recard
    from stmm_core.hub.remote import push as do_push
    from stmm_core.hub.settings import parse_ref

    repo_id, _ = parse_ref(repo)
    if license or dataset:
        recard(folder, license=license, datasets=list(dataset or []) or None, repo_id=repo_id)
    out = do_push(folder, repo, revision=revision, private=private, message=message)
    typer.echo(f"pushed {len(out['files'])} files to {out['repo']} ({out['revision']}): {out['repo']}@{out['commit']}")


def pull(
    ref: str = typer.Argument(..., metavar="ORG/NAME[@REV]", help="Hub repository, pinned with @commit."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Copy the verified files to this folder "
                                                                      "(with pulled.json)."),
    offline: bool = OFFLINE,
    allow_pickle: bool = ALLOW_PICKLE,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier pull in the -o folder (whole)."),
) -> None:
    """Download (or reuse from the cache) a pipeline, resolve its revision to a commit and verify every file."""
    from stmm_core.hub.remote import pull as do_pull

    res = do_pull(ref, output, offline=offline or None, allow_pickle=allow_pickle, warn=_warn, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps({"repo": res.repo_id, "revision": res.revision, "commit": res.commit,
                               "path": str(res.path), "pinned": res.pinned, "from_cache": res.from_cache,
                               "spec_hash": res.pipeline.spec.hash(), "seconds": round(res.seconds, 4)}, indent=2))
        return
    typer.echo(f"{res.repo_id}@{res.commit} verified ({len(res.pipeline.manifest['files'])} files, spec "
               f"{res.pipeline.spec.hash()[:12]}, {'cache' if res.from_cache else 'downloaded'}, "
               f"{res.seconds:.3f} s) -> {res.path}")


def embed(
    pipeline: str = typer.Argument(..., metavar="PIPELINE", help="Saved pipeline folder or hf:org/name@rev."),
    data: Path = typer.Option(..., "--data", help=".h5ad, Space Ranger folder, or counts table."),
    output: Path = typer.Option(..., "-o", "--output", help=".h5ad to write (input + obsm['X_stmm'])."),
    image: Optional[Path] = typer.Option(None, "--image", help="H&E image to use instead of the one in the data."),
    scale: Optional[float] = typer.Option(None, "--scale", callback=checks.positive,
                                          help="Full-resolution px → --image px scale factor."),
    coords: Optional[Path] = typer.Option(None, "--coords", help="Spot positions for a counts table: a table "
                                                                 "with columns id, x, y (full-res px)."),
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", help="layers[] name (or 'raw') holding "
                                                                            "the raw counts of an .h5ad."),
    device: str = typer.Option("auto", "--device", callback=checks.device, help="auto | cpu | cuda"),
    unique_ids: bool = checks.UNIQUE_IDS,
    offline: bool = OFFLINE,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a trained pipeline on a section (no refitting) and write the embedding."""
    import numpy as np

    from stmm_core.atomic import atomic_file, check_not_input, check_output
    from stmm_core.pipeline.run import load_section
    from stmm_core.pipeline_base import embed as embed_with, family_of, implementation
    from stmm_core.seeding import configure_threads, resolve_device

    check_not_input(output, {"--data": data, "--image": image, "--coords": coords})  # before any work
    check_output(output, kind="file")
    if output.suffix != ".h5ad":
        from stmm_core.errors import StmmError

        raise StmmError(f"-o {output}: the embedding is written as AnnData; give a .h5ad file name")
    loaded, source, load_s = resolve_pipeline(pipeline, offline=offline, allow_pickle=allow_pickle)
    family_of(loaded.spec).require("embedding", "stmm embed")
    impl = implementation(loaded.spec)
    trained = impl.from_loaded(loaded)
    dev = resolve_device(device)
    threads = _fit_threads(loaded.metrics)
    used = configure_threads(threads)
    t0 = time.perf_counter()
    section = load_section(data, image=image, scale=scale, coords=coords, counts_layer=counts_layer)
    read_s = time.perf_counter() - t0
    if not quiet and threads is not None:  # after the input is read, so a bad input stays one error line
        typer.echo(f"using {used} threads, as the fit did (bit-for-bit reproduction; STMM_THREADS overrides)", err=True)
    t1 = time.perf_counter()
    emb, info = embed_with(trained, section, device=dev, progress=not quiet)
    embed_s = time.perf_counter() - t1
    adata = section.adata.copy()
    adata.obsm["X_stmm"] = emb
    adata.uns["stmm"] = {"spec_hash": loaded.spec.hash(), "spec": loaded.spec.canonical_json(), "source": source}
    with atomic_file(output) as tmp:
        adata.write_h5ad(tmp)
    typer.echo(f"pipeline {source} (spec {loaded.spec.hash()[:12]}): load {load_s:.3f} s")
    typer.echo(f"section {section.name}: {section.n_spots} spots; read {read_s:.2f} s, embed {embed_s:.2f} s; "
               f"embedding {emb.shape[0]}x{emb.shape[1]} float32, sha256 "
               f"{__import__('hashlib').sha256(np.ascontiguousarray(emb).tobytes()).hexdigest()[:16]}")
    removed = (section.meta.get("filtered") or {}).get("spots_removed", 0)
    if removed:  # said, so a shorter output is never a surprise
        typer.echo(f"  {removed} spot{'s' if removed != 1 else ''} without counts left out (not in {output.name})")
    typer.echo(f"wrote {output}")


def _fit_threads(metrics: dict) -> int | None:
    """The fit's thread count when ``STMM_THREADS`` is not set and this machine has that many cores, else None.

    oneDNN convolutions and reductions split work by thread, so the embedding equals the fit's bit for bit only
    with the same count."""
    import os

    if os.environ.get("STMM_THREADS", "").strip():
        return None
    n = metrics.get("threads") if isinstance(metrics, dict) else None
    return int(n) if isinstance(n, int) and 1 <= n <= (os.cpu_count() or 1) else None


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("embed")(embed)
