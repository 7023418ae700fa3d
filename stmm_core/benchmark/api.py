"""``run_benchmark``: the code behind ``stmm benchmark`` (suite or config → results, report, plots)."""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stmm_core.atomic import write_text
from stmm_core.errors import SpecError, StmmError

SUITES = ("domains", "expression", "retrieval", "speed")


class BenchmarkConfig(BaseModel):
    """A benchmark config file (``benchmarks/configs/*.json``); command-line options override it."""

    model_config = ConfigDict(extra="forbid")

    suite: str
    pipelines: Optional[list[str]] = None
    datasets: Optional[list[str]] = None
    seeds: Optional[int] = Field(None, ge=1, le=100)
    seed_start: int = Field(0, ge=0)
    label: Optional[str] = None
    folds: Optional[list[str]] = Field(None, description="held-out sections to evaluate (fold suites); default all")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                 description="pipeline name or glob → {setting: value}")
    baselines: Optional[list[str]] = None
    notes: list[str] = Field(default_factory=list)


def suite_module(name: str) -> ModuleType:
    """The module of suite *name*, or one clear error."""
    if name not in SUITES:
        import difflib

        close = difflib.get_close_matches(name, SUITES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StmmError(f"unknown benchmark suite {name!r}{hint}; suites: {', '.join(SUITES)}, or a config file "
                        "(benchmarks/configs/*.json)")
    return importlib.import_module(f"stmm_core.benchmark.suites.{name}")


def load_config(suite_or_path: str) -> BenchmarkConfig:
    """A suite name gives an empty config for that suite; a ``.json`` path is read and validated."""
    p = Path(suite_or_path)
    if suite_or_path.endswith(".json") or p.is_file():
        if not p.is_file():
            raise StmmError(f"benchmark config {suite_or_path} not found")
        try:
            cfg = BenchmarkConfig.model_validate(json.loads(p.read_text()))
        except json.JSONDecodeError as exc:
            raise SpecError(f"{p} is not valid JSON: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
            raise SpecError(f"invalid benchmark config {p}: {problems}") from None
        suite_module(cfg.suite)
        return cfg
    suite_module(suite_or_path)
    return BenchmarkConfig(suite=suite_or_path)


@dataclass
class Outcome:
    """What one benchmark produced."""

    result: Any  # BenchmarkResult
    files: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    baselines: set[str] = field(default_factory=set)


def render_extra(suite: str, baselines: set[str]) -> dict[str, Any]:
    mod = suite_module(suite)
    # speed compares different amounts of work, so no winner/loser lines there
    primary = None if suite == "speed" else mod.PRIMARY
    return {"primary": primary, "higher": mod.HIGHER_IS_BETTER, "baselines": baselines}


def run_benchmark(
    suite_or_config: str,
    *,
    pipelines: list[str] | None = None,
    datasets: list[str] | None = None,
    seeds: int | None = None,
    seed_start: int | None = None,
    label: str | None = None,
    folds: list[str] | None = None,
    part: str | None = None,
    sets: dict[str, dict[str, Any]] | None = None,
    out_dir: Path | None = None,
    work_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Run a suite (or a config) and, with *out_dir*, write results JSON + schema, Markdown, plots, RESULTS.md."""
    from stmm_core.benchmark import datasets as dsets
    from stmm_core.benchmark import pipelines as pipes
    from stmm_core.benchmark.results import (BenchmarkResult, DatasetRecord, PipelineRecord, capture_environment,
                                             now_iso, summarise, write_result)
    from stmm_core.benchmark.runner import Context, run_units
    from stmm_core.seeding import configure_threads, resolve_device

    cfg = load_config(suite_or_config)
    mod = suite_module(cfg.suite)
    rules = {k: dict(v) for k, v in cfg.overrides.items()}
    for k, v in (sets or {}).items():
        rules.setdefault(k, {}).update(v)
    selected = pipes.select(pipelines or cfg.pipelines, mod.DEFAULT_PIPELINES, rules, cfg.baselines)
    descs = dsets.select(datasets or cfg.datasets, mod.DEFAULT_DATASETS, label or cfg.label)
    resolved = [dsets.resolve(d) for d in descs]
    n_seeds = seeds or cfg.seeds or mod.DEFAULT_SEEDS
    start = cfg.seed_start if seed_start is None else seed_start
    seed_list = list(range(start, start + n_seeds))
    dev = resolve_device(device)
    configure_threads()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="stmm-bench-"))
    ctx = Context(suite=cfg.suite, pipelines=selected, datasets=resolved, seeds=seed_list, work_dir=work,
                  device=dev, progress=progress, folds=folds or cfg.folds, **({"log": log} if log else {}))
    units = mod.units(ctx)
    t0 = time.perf_counter()
    baselines = {p.name for p in selected if p.baseline}
    stem = cfg.suite if part is None else f"{cfg.suite}.part-{part}"
    results_dir = None if out_dir is None else Path(out_dir) / "results"

    def build(rows: list[Any]) -> BenchmarkResult:
        groups = None
        if any(r.fold for r in rows):
            held = sorted({r.fold for r in rows if r.fold})
            label_all = f"{len(held)} of {len(resolved)} folds ({', '.join(held)})" if len(held) < len(resolved) \
                else f"{len(resolved)} folds ({', '.join(d.name for d in resolved)})"
            groups = {d.name: label_all for d in resolved}
        return BenchmarkResult(
            suite=cfg.suite, created=now_iso(), command=command or f"stmm benchmark {suite_or_config}",
            wall_seconds=time.perf_counter() - t0, seeds=seed_list, metrics=list(mod.METRICS),
            environment=env,
            datasets=[DatasetRecord(name=d.name, path=d.local_path, sha256=d.descriptor.sha256, verified=d.verified,
                                    label=d.descriptor.label, description=d.descriptor.description)
                      for d in resolved],
            pipelines=[PipelineRecord(**p.record()) for p in selected],
            rows=rows, summary=summarise(rows, list(mod.METRICS), groups),
            notes=list(cfg.notes) + list(mod.notes(ctx)),
        )

    env = capture_environment()

    def checkpoint(rows: list[Any]) -> None:
        """Rewritten after every run, so an interrupted benchmark keeps the runs it finished."""
        if results_dir is not None:
            write_result(build(rows), results_dir, stem)
            _write_baselines(results_dir, cfg.suite, sorted(baselines))
            save_maps(ctx.store.get("maps", {}), results_dir / f"{stem}.maps.npz")

    rows = run_units(ctx, units, mod.describe, on_row=checkpoint)
    result = build(rows)
    outcome = Outcome(result, baselines=baselines)
    if results_dir is not None:
        outcome.files.append(write_result(result, results_dir, stem))
        save_maps(ctx.store.get("maps", {}), results_dir / f"{stem}.maps.npz")
        if part is None:
            files, outcome.plots = finalise_suite(Path(out_dir), cfg.suite, result)
            outcome.files += files
    return outcome


def _add_backgrounds(maps: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Give the maps of each registered dataset its H&E (read again when the maps came from saved shards);
    a dataset that cannot be read is drawn without it."""
    from stmm_core.benchmark.datasets import BUILTIN, resolve
    from stmm_core.errors import StmmError
    from stmm_core.pipeline.run import load_section
    from stmm_core.plots import _background, microns_per_px

    for ds in sorted({d for d, _ in maps}):
        entries = [v for (d, _), v in maps.items() if d == ds]
        if any(v.get("background") is not None for v in entries) or ds not in BUILTIN:
            continue
        try:
            section = load_section(resolve(BUILTIN[ds]).local_path)
        except (StmmError, OSError):
            continue
        view, factor = _background(section, max_side=800)
        if view is not None:
            bg = {"view": view, "factor": factor, "um_per_px": microns_per_px(section)}
            for v in entries:
                v["background"] = bg


def save_maps(maps: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    """Domain labels of the first seed of each pipeline (for the per-section maps), as ``.npz``."""
    if not maps:
        return
    import numpy as np

    arrays = {}
    for (ds, pipe), v in maps.items():
        for k in ("coords", "labels", "truth"):
            arrays[f"{ds}|{pipe}|{k}"] = np.asarray(v[k]).astype(str) if k == "truth" else np.asarray(v[k])
        arrays[f"{ds}|{pipe}|meta"] = np.asarray([v["seed"], v["ari"]], dtype=float)
    from stmm_core.atomic import atomic_file

    with atomic_file(path) as tmp:  # the stage ends in .npz, so numpy keeps the name
        np.savez_compressed(tmp, **arrays)


def load_maps(paths: list[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    import numpy as np

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        before = set(out)
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                ds, pipe, field_ = key.split("|")
                if (ds, pipe) in before:
                    continue  # the first shard's map of a pipeline is kept
                d = out.setdefault((ds, pipe), {})
                if field_ == "meta":
                    d["seed"], d["ari"] = int(z[key][0]), float(z[key][1])
                else:
                    d[field_] = z[key]
    return out


def finalise_suite(out_dir: Path, suite: str, result: Any | None = None) -> tuple[list[Path], list[Path]]:
    """Merge ``<suite>.part-*.json`` shards (if any) into ``<suite>.json``, then plots, ``<suite>.md`` and
    ``RESULTS.md``."""
    from stmm_core.benchmark.report import markdown
    from stmm_core.benchmark.results import load_result, merge, write_result

    results_dir = out_dir / "results"
    parts = sorted(results_dir.glob(f"{suite}.part-*.json"))
    files: list[Path] = []
    if parts:
        result = merge([load_result(p) for p in parts])
        files.append(write_result(result, results_dir, suite))
        map_files = sorted(results_dir.glob(f"{suite}.part-*.maps.npz"))
    else:
        result = result or load_result(results_dir / f"{suite}.json")
        map_files = [p for p in [results_dir / f"{suite}.maps.npz"] if p.is_file()]
    bpath = results_dir / "baselines.json"
    baselines = set(json.loads(bpath.read_text()).get(suite, [])) if bpath.is_file() else set()
    plots = _plots(result, load_maps(map_files), out_dir / "plots")
    md = results_dir / f"{suite}.md"
    rel = [os.path.relpath(p, md.parent) for p in plots]
    write_text(md, markdown(result, plots=rel, **render_extra(suite, baselines)) + "\n")
    files += [md, write_combined(out_dir)]
    return files, plots


def _write_baselines(results_dir: Path, suite: str, names: list[str]) -> None:
    path = results_dir / "baselines.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[suite] = sorted(set(data.get(suite, [])) | set(names))  # shards of one suite add up
    write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _plots(result: Any, maps: dict[tuple[str, str], dict[str, Any]], plot_dir: Path) -> list[Path]:
    from stmm_core.benchmark import plots

    s = result.suite
    out: list[Optional[Path]] = []
    if s == "domains":
        _add_backgrounds(maps)
        out.append(plots.bar_chart(result, ["ari", "nmi"], plot_dir / "domains-scores.png", "domains: ARI / NMI"))
        out += plots.domain_maps(maps, lambda ds: plot_dir / f"domains-maps-{ds}.png")
    elif s == "expression":
        out.append(plots.bar_chart(result, ["pearson_hvg50", "pearson_all", "pearson_spot"],
                                   plot_dir / "expression-pearson.png", "expression: Pearson r, held-out sections"))
    elif s == "retrieval":
        out.append(plots.bar_chart(result, ["top1", "top5", "top1_decoder", "top5_decoder"],
                                   plot_dir / "retrieval-topk.png", "retrieval: image → expression",
                                   chance={"top1": "chance_top1", "top5": "chance_top5",
                                           "top1_decoder": "chance_top1", "top5_decoder": "chance_top5"}))
    elif s == "speed":
        from stmm_core.benchmark.suites.speed import STAGE_METRICS

        out.append(plots.stage_bars(result, STAGE_METRICS, plot_dir / "speed-stages.png"))
    return [p for p in out if p is not None]


def write_combined(out_dir: Path) -> Path:
    """``RESULTS.md`` from every ``results/<suite>.json`` in *out_dir*, suites in a fixed order."""
    from stmm_core.benchmark.report import combined
    from stmm_core.benchmark.results import load_result

    out_dir = Path(out_dir)
    bpath = out_dir / "results" / "baselines.json"
    base = json.loads(bpath.read_text()) if bpath.is_file() else {}
    items = []
    for suite in SUITES:
        path = out_dir / "results" / f"{suite}.json"  # shards (<suite>.part-*.json) are merged by finalise_suite
        if not path.is_file():
            continue
        res = load_result(path)
        plot_dir = out_dir / "plots"
        plots = sorted(str(p.relative_to(out_dir)) for p in plot_dir.glob(f"{suite}-*.png")) if plot_dir.is_dir() else []
        items.append((res, {**render_extra(suite, set(base.get(suite, []))), "plots": plots}))
    intro = ["Generated by `stmm benchmark` from the JSON files in `results/` (each validates against "
             "`results/schema.json`). Tables: mean ± sd over seeds (and over held-out folds where a suite has "
             "folds). Verdict lines pair each pipeline with the best baseline on the same folds × seeds: 'beats' / "
             "'LOSES to' only when the 95 % interval of the paired differences excludes zero, with every losing "
             "fold listed."]
    notes_path = out_dir / "NOTES.md"
    text = combined(items, intro)
    if notes_path.is_file():
        text = text.rstrip() + "\n\n" + notes_path.read_text()
    target = out_dir / "RESULTS.md"
    write_text(target, text)
    return target
