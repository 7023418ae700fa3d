"""Run one suite: every (pipeline, dataset/fold, seed) unit in turn, a failure recorded as a row, never fatal."""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from stmm_core.benchmark.datasets import ResolvedDataset
from stmm_core.benchmark.pipelines import BenchPipeline
from stmm_core.benchmark.results import Row
from stmm_core.errors import StmmError


class NotApplicable(Exception):
    """The pipeline does not do what the suite measures (e.g. a clustering pipeline in the expression suite)."""


Metrics = dict[str, Optional[float]]
UnitFn = Callable[[], tuple[Metrics, dict[str, Any]]]


@dataclass
class Unit:
    pipeline: BenchPipeline
    dataset: str
    fold: Optional[str]
    seed: Optional[int]
    fn: UnitFn


@dataclass
class Context:
    """Everything a suite needs to build and run its units."""

    suite: str
    pipelines: list[BenchPipeline]
    datasets: list[ResolvedDataset]
    seeds: list[int]
    work_dir: Path
    device: str = "cpu"
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    #: held-out sections to evaluate (fold suites); None = every dataset
    folds: Optional[list[str]] = None
    #: per-suite scratch (loaded sections, domain maps for plots, …)
    store: dict[str, Any] = field(default_factory=dict)


def clean_metrics(metrics: dict[str, Any]) -> Metrics:
    """Floats, with NaN/inf turned into None (JSON has no NaN)."""
    out: Metrics = {}
    for k, v in metrics.items():
        if v is None:
            out[k] = None
            continue
        f = float(v)
        out[k] = f if math.isfinite(f) else None
    return out


def error_text(exc: BaseException) -> str:
    """One line: the message of a user error, the type and message of anything else."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, StmmError):
        return msg or type(exc).__name__
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_units(ctx: Context, units: list[Unit], describe: Callable[[Metrics], str],
              on_row: Callable[[list[Row]], None] | None = None) -> list[Row]:
    """Run every unit; exceptions become failed rows, :class:`NotApplicable` a 'not applicable' row.

    *on_row* is called with the rows so far after each unit (checkpointing)."""
    from stmm_core.progress import progress_bar

    rows: list[Row] = []
    n = len(units)
    with progress_bar(total=n, desc=f"benchmark {ctx.suite}", unit="run", enabled=ctx.progress) as bar:
        for i, u in enumerate(units, 1):
            where = u.dataset + (f" (held out {u.fold})" if u.fold else "")
            tag = f"[{i}/{n}] {u.pipeline.name} on {where}" + ("" if u.seed is None else f", seed {u.seed}")
            rows.append(_run_one(ctx, u, tag, describe))
            bar.update(1)
            if on_row is not None:
                on_row(rows)
    return rows


def _run_one(ctx: Context, u: Unit, tag: str, describe: Callable[[Metrics], str]) -> Row:
    base = {"pipeline": u.pipeline.name, "dataset": u.dataset, "fold": u.fold, "seed": u.seed}
    if u.pipeline.error is not None:
        ctx.log(f"{tag}: FAILED: {u.pipeline.error}")
        return Row(**base, status="failed", error=u.pipeline.error)
    t0 = time.perf_counter()
    try:
        metrics, details = u.fn()
    except NotApplicable as exc:
        return Row(**base, status="not applicable", error=str(exc))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a failed run stays in the table
        seconds = time.perf_counter() - t0
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        ctx.log(f"{tag}: FAILED after {seconds:.0f} s: {error_text(exc)}")
        return Row(**base, status="failed", error=error_text(exc), seconds=seconds,
                   details={"traceback_tail": "".join(tb[-3:])[-2000:]})
    seconds = time.perf_counter() - t0
    m = clean_metrics(metrics)
    ctx.log(f"{tag}: {describe(m)} ({seconds:.0f} s)")
    return Row(**base, status="ok", seconds=seconds, metrics=m, details=details)
