"""``stmm benchmark``: pipelines against baselines on registered datasets, side by side."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from stmm_core.cli import checks


def _split(items: Optional[list[str]], flag: str = "") -> Optional[list[str]]:
    """Repeated options and comma-separated lists both work: ``--pipelines a,b --pipelines c``. An option given
    with nothing in it (``-d ''``, an unset shell variable) is refused: it would silently mean the suite's defaults."""
    if not items:
        return None
    out = [x.strip() for item in items for x in item.split(",") if x.strip()]
    if not out and flag:
        from stmm_core.errors import StmmError

        raise StmmError(f"{flag} {','.join(items)!r} names nothing; give at least one name, or leave {flag} out for "
                        "the suite's defaults")
    return out or None


def parse_pipeline_sets(sets: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """``--set [PIPELINE:]key=value``; without a pipeline the override applies to every pipeline that has it."""
    from stmm_core.cli.compose_cmd import parse_sets

    out: dict[str, dict[str, Any]] = {}
    for item in sets or []:
        target, sep, rest = item.partition(":")
        if not sep or "=" in target:
            target, rest = "*", item
        out.setdefault(target, {}).update(parse_sets([rest]))
    return out


def check_sets(suite: str, pipelines: Optional[list[str]], raw: Optional[list[str]]) -> None:
    """``--set`` checked before any run: it must name a pipeline of this benchmark (``PIPELINE:``), be a setting at
    least one of them has (a typo was silently applied to none), and leave their specs valid (else every row
    failed, after the other pipelines had run)."""
    import fnmatch

    from stmm_core.benchmark import pipelines as pipes
    from stmm_core.benchmark.api import load_config, suite_module
    from stmm_core.cli.compose_cmd import blame_sets
    from stmm_core.errors import StmmError

    rules = parse_pipeline_sets(raw)
    if not rules:
        return
    cfg = load_config(suite)
    default = suite_module(cfg.suite).DEFAULT_PIPELINES
    base = {k: dict(v) for k, v in cfg.overrides.items()}
    merged = {k: dict(v) for k, v in base.items()}
    for k, v in rules.items():
        merged.setdefault(k, {}).update(v)
    plain = {p.name: p for p in pipes.select(pipelines or cfg.pipelines, default, base, cfg.baselines)}
    changed = pipes.select(pipelines or cfg.pipelines, default, merged, cfg.baselines)
    names = ", ".join(p.name for p in changed)
    for target, sets in rules.items():
        hits = [p for p in changed if target == "*" or fnmatch.fnmatchcase(p.name, target)]
        if not hits:
            raise StmmError(f"--set {target}:…: no pipeline of this benchmark is named {target!r} (its pipelines: "
                            f"{names})")
        for key in sets:
            if not any(key in p.overrides for p in hits):
                raise StmmError(f"--set {key}: no pipeline of this benchmark has the setting {key!r} (pipelines: "
                                f"{names}; their settings: 'stmm info RECIPE')")
    items = [item.partition(":")[2] if ":" in item.partition("=")[0] else item for item in raw or []]
    for p in changed:
        if p.error and p.name in plain and not plain[p.name].error:
            raise StmmError(f"{blame_sets(p.error, items)} (pipeline {p.name})")


def check_suite_options(suite: str, label: Optional[str], datasets: Optional[list[str]],
                        folds: Optional[list[str]], work: Optional[Path]) -> None:
    """Options a suite would silently ignore are refused (the run would not be the one asked for): ``--folds``
    outside the held-out suites, ``--label`` without a dataset given by path (registered ones carry their own
    label column) or outside the domains suite, and a ``--work`` that is a file."""
    from stmm_core.benchmark.api import load_config
    from stmm_core.benchmark.datasets import BUILTIN
    from stmm_core.errors import StmmError

    cfg = load_config(suite)
    name = cfg.suite
    if folds and name not in ("expression", "retrieval"):
        raise StmmError(f"--folds applies to the expression and retrieval suites (a held-out section each); the "
                        f"{name} suite runs on every --datasets section: leave --folds out")
    if label is not None:
        if name != "domains":
            raise StmmError(f"--label applies to the domains suite; leave it out for the {name} suite")
        if not any(item not in BUILTIN and Path(item).exists() for item in datasets or cfg.datasets or []):
            raise StmmError(f"--label {label!r} names the label column of datasets given by path (-d my.h5ad); the "
                            "registered datasets carry their own ('stmm benchmark --list-datasets'): leave --label out")
    if work is not None and work.exists() and not work.is_dir():
        raise StmmError(f"--work {work} is a file; give a folder for the trained fold models")


def check_label(label: Optional[str], datasets: Optional[list[str]]) -> None:
    """``--label COLUMN`` must be an obs column of each ``.h5ad`` given by path (read from the file's header, not
    its data): else every run failed, after writing a results folder."""
    from stmm_core.errors import StmmError

    for item in (datasets or []) if label else []:
        path = Path(item)
        if not (path.suffix == ".h5ad" and path.is_file()):
            continue
        try:
            import h5py

            with h5py.File(path, "r") as fh:
                obs = fh["obs"]
                cols = [str(c) for c in obs.attrs.get("column-order", [k for k in obs.keys() if k != "_index"])]
        except Exception:  # noqa: BLE001 - an unreadable file is reported by its run
            continue
        if label not in cols:
            raise StmmError(f"--label {label!r}: {path} has no obs column {label!r} (columns: "
                            f"{', '.join(cols) or 'none'})")


def check_pipeline_names(items: Optional[list[str]]) -> None:
    """A ``--pipelines`` word that is no recipe, spec file, glob or ``RECIPE+consensusN`` is a typo: refused before
    any run (with the closest recipe names), not a failed row after every other pipeline has run."""
    import difflib

    from stmm_core.benchmark.pipelines import _CONSENSUS
    from stmm_core.errors import StmmError
    from stmm_core.recipes import all_recipes

    names = list(all_recipes())
    for item in items or []:
        if item.endswith(".json") or Path(item).exists() or any(ch in item for ch in "*?["):
            continue
        m = _CONSENSUS.fullmatch(item)
        if m is None and "+consensus" in item:
            raise StmmError(f"--pipelines {item!r}: a consensus row is RECIPE+consensusN or RECIPE+consensusN-MODE "
                            "with N seeds (2…100) and MODE vote, embedding or coassoc, e.g. "
                            "stereomm-expression+consensus5-coassoc")
        name = m.group(1) if m else item
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise StmmError(f"--pipelines {item!r}: no recipe named {name!r}; {hint}(recipes: 'stmm list --kind "
                            "recipe'; a spec file ends in .json)")
        if m is not None:
            _check_consensus_row(item, name, int(m.group(2)))


def _check_consensus_row(item: str, recipe: str, n: int) -> None:
    """``RECIPE+consensusN``: N seeds in 2…100, and a recipe whose family fits consensus domains."""
    from stmm_core.errors import StmmError
    from stmm_core.family import get_family
    from stmm_core.recipes import get_recipe

    if not 2 <= n <= 100:
        raise StmmError(f"--pipelines {item!r}: +consensus{n} needs 2…100 seeds (1 would be the recipe's own row: "
                        f"-p {recipe})")
    family = get_recipe(recipe)["spec"].get("pipeline")
    if family is not None and "consensus" not in get_family(family).fit_options:
        raise StmmError(f"--pipelines {item!r}: the {family!r} pipeline family has no consensus domains; "
                        f"benchmark -p {recipe} instead")


def benchmark(
    suite: Optional[str] = typer.Argument(None, help="domains | expression | retrieval | speed, a config .json, or report (rebuild DIR/RESULTS.md)"),
    pipelines: Optional[list[str]] = typer.Option(None, "--pipelines", "-p",
                                                  help="Recipe names, glob patterns (stereomm*) or spec files; "
                                                       "repeat or comma-separate."),
    datasets: Optional[list[str]] = typer.Option(None, "--datasets", "-d",
                                                 help="Registered names, glob patterns (her2st-C*) or .h5ad paths."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Number of seeds per run."),
    seed_start: Optional[int] = typer.Option(None, "--seed-start", min=0, help="First seed (default 0)."),
    fmt: str = typer.Option("table", "--format", "-f", help="stdout format: table, json or markdown."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Folder for results/<suite>.json, schema, Markdown, plots, RESULTS.md."),
    work: Optional[Path] = typer.Option(None, "--work",
                                        help="Folder for trained fold models (reused across suites); default temp."),
    folds: Optional[list[str]] = typer.Option(None, "--folds",
                                              help="Held-out sections to evaluate (expression/retrieval); "
                                                   "training always uses all the other datasets."),
    part: Optional[str] = typer.Option(None, "--part",
                                       help="Write results/<suite>.part-NAME.json (a shard run in parallel); "
                                            "'stmm benchmark report -o DIR' merges the shards."),
    label: Optional[str] = typer.Option(None, "--label", help="Label column for user datasets (domains suite)."),
    sets: Optional[list[str]] = typer.Option(None, "--set",
                                             help="[PIPELINE:]component.param=value (repeatable)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    list_datasets: bool = typer.Option(False, "--list-datasets", help="Print the registered datasets and exit."),
    unique_ids: bool = checks.UNIQUE_IDS,
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", callback=checks.counts_layer_for_all,
                                               help="Every .h5ad dataset's raw counts are in layers[LAYER] (raw: "
                                                    "adata.raw) instead of X."),
) -> None:
    """Run every pipeline against the baselines on the same data; a failed run stays in the table."""
    from stmm_core.errors import StmmError

    if list_datasets:
        from stmm_core.benchmark.datasets import BUILTIN, data_root

        typer.echo(f"data folder: {data_root()} (set STMM_DATA)")
        for d in BUILTIN.values():
            typer.echo(f"{d.name:<14} {d.path or d.url}  label={d.label or '-'}  {d.description}")
        return
    if suite is None:
        raise StmmError("give a suite: stmm benchmark domains|expression|retrieval|speed|CONFIG.json|report "
                        "(stmm benchmark --help)")
    if suite == "report":
        from stmm_core.benchmark.api import SUITES, finalise_suite

        if output is None or not (output / "results").is_dir():
            raise StmmError("stmm benchmark report -o DIR: DIR must hold results/<suite>.json from earlier runs")
        for name in SUITES:
            if any((output / "results").glob(f"{name}.part-*.json")) or (output / "results" / f"{name}.json").is_file():
                files, plots = finalise_suite(output, name)
                for f in files + plots:
                    typer.echo(f"wrote {f}", err=True)
        return
    if fmt not in ("table", "json", "markdown"):
        raise StmmError(f"--format {fmt!r}: use table, json or markdown")
    from stmm_core.benchmark.api import run_benchmark

    if part is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*", part):
        raise StmmError(f"--part {part!r}: a shard name is letters, digits, '-', '_' (and '.' inside), e.g. --part a1; "
                        "it becomes results/<suite>.part-NAME.json, which 'stmm benchmark report' merges")
    chosen, data, held = _split(pipelines, "--pipelines"), _split(datasets, "--datasets"), _split(folds, "--folds")
    check_pipeline_names(chosen)
    check_sets(suite, chosen, sets)
    check_suite_options(suite, label, data, held, work)
    check_label(label, data)
    if output is not None:  # an accumulating results folder (suites and shards add up): writable, not a file
        from stmm_core.atomic import check_output

        check_output(output, kind="dir", resume=True)
        if any((output / name).is_file() for name in ("manifest.json", "spec.json")):
            raise StmmError(f"-o {output} is a run folder (it holds a saved pipeline), not a benchmark folder; give a "
                            "new folder, or one of earlier benchmark results, with -o")
        if output.is_dir() and any(output.iterdir()) and not (
                (output / "results").is_dir() or (output / "RESULTS.md").is_file()):
            raise StmmError(f"-o {output} holds other files and no benchmark results (results/, RESULTS.md); give a "
                            "new or empty folder, or one of earlier benchmark results, with -o")

    command = "stmm benchmark " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else f"stmm benchmark {suite}"
    outcome = run_benchmark(suite, pipelines=chosen, datasets=data, seeds=seeds,
                            seed_start=seed_start, label=label,
                            folds=held, part=part, sets=parse_pipeline_sets(sets), out_dir=output,
                            work_dir=work, device=device, command=command)
    res = outcome.result
    if fmt == "json":
        typer.echo(res.model_dump_json(indent=1))
    elif fmt == "markdown":
        from stmm_core.benchmark.api import render_extra
        from stmm_core.benchmark.report import markdown

        typer.echo(markdown(res, **render_extra(res.suite, outcome.baselines)))
    else:
        from stmm_core.benchmark.report import table

        typer.echo(table(res))
    for f in outcome.files + outcome.plots:
        typer.echo(f"wrote {f}", err=True)
    rows = list(getattr(res, "rows", []) or [])
    ran = [r for r in rows if r.status != "not applicable"]
    if ran and not any(r.status == "ok" for r in ran):
        first = " ".join(str(next((r.error for r in ran if r.error), "see the table")).split())
        raise StmmError(f"every benchmark run failed ({len(ran)} run{'s' if len(ran) != 1 else ''}; first error: "
                        f"{first})")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
