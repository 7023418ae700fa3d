"""Leave-one-section-out folds shared by the ``expression`` and ``retrieval`` suites.

One fold = train on every other section, evaluate on the held-out one. A fold's evaluation is stored as
``<work>/folds/<pipeline>-<spec hash>/seed<s>/<held out>/eval.json``, so running ``expression`` and then
``retrieval`` with the same ``--work`` folder trains each model once.

Each fold is run by the pipeline's family (:meth:`stmm_core.pipeline_base.Pipeline.bench_fold`): by default
fit on the training sections and :mod:`stmm_core.pipeline_eval` on the held-out one (per-gene Pearson over
all predicted genes and over the family's evaluation genes; image → expression retrieval among all spots of
the held-out section). Magic brings its own (:mod:`stmm_magic.bench`: its evaluation with the ITM re-ranking,
and the feature baselines that share its spec — ``hest-ridge``, ``ridge-cv``, ``stain-ridge``,
``knn-expression``, ``train-mean``). A family lacking the capability a suite measures gives a 'not applicable' row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any


from stmm_core.benchmark.runner import Context, NotApplicable, Unit
from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.benchmark.pipelines import BenchPipeline


def fold_pairs(ctx: Context) -> list[tuple[str, list[str], str]]:
    """``(held-out name, training paths, held-out path)`` for every dataset."""
    if len(ctx.datasets) < 2:
        raise DataError(f"the {ctx.suite} suite holds one section out at a time: give at least two sections "
                        f"(got {', '.join(d.name for d in ctx.datasets) or 'none'}), e.g. --datasets 'her2st-C*'")
    names = [d.name for d in ctx.datasets]
    held = ctx.folds or names
    unknown = [f for f in held if f not in names]
    if unknown:
        raise DataError(f"--folds {', '.join(unknown)}: not among the datasets ({', '.join(names)})")
    return [(d.name, [o.local_path for o in ctx.datasets if o.name != d.name], d.local_path) for d in ctx.datasets
            if d.name in held]


def fold_units(ctx: Context, keys: list[str], *, keep_missing: bool) -> list[Unit]:
    """One unit per (pipeline, seed, held-out section): train on the others, report ``keys`` of the fold's
    metrics (a key the pipeline did not produce is reported as None when ``keep_missing``, else left out)."""
    out = []
    for pipe in ctx.pipelines:
        for seed in ctx.seeds:
            for held, train, test in fold_pairs(ctx):
                def fn(pipe=pipe, seed=seed, held=held, train=train, test=test):
                    res = fold_eval(ctx, pipe, seed, held, train, test)
                    got = res["metrics"]
                    return {k: got.get(k) for k in keys if keep_missing or k in got}, res["details"]
                out.append(Unit(pipe, held, held, seed, fn))
    return out


def fold_eval(ctx: Context, pipe: "BenchPipeline", seed: int, held: str, train_paths: list[str],
              test_path: str) -> dict[str, Any]:
    """Metrics and details of one fold (computed once per work folder, then read back)."""
    from stmm_core.pipeline_base import family_of, implementation

    fam = family_of(pipe.spec)
    if pipe.method is None:  # the family's own model: it must offer what the suite measures
        wanted = ("expression",) if ctx.suite == "expression" else ("scoring", "expression")
        if not any(fam.has(c) for c in wanted):
            raise NotApplicable(f"the {fam.name!r} pipeline family offers {', '.join(fam.capabilities) or 'no'} "
                                f"capabilities, not {' or '.join(wanted)} (it does not predict expression from images)")
    spec = pipe.spec.with_overrides({"train.seed": seed})
    fold_dir = Path(ctx.work_dir) / "folds" / f"{pipe.name}-{spec.hash()[:12]}" / f"seed{seed}" / held
    done = fold_dir / "eval.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        cached["details"]["reused"] = str(done)
        return cached
    fold_dir.mkdir(parents=True, exist_ok=True)
    # a recipe's "method" (a baseline sharing the family's spec, e.g. hest-ridge) is run by the family too
    out = implementation(spec).bench_fold(spec, list(train_paths), test_path, fold_dir / "run", ctx.device,
                                          pipe.method, {"work_dir": Path(ctx.work_dir), "seed": seed, "held": held})
    out["details"]["spec_hash"] = spec.hash()
    from stmm_core.atomic import write_text

    write_text(done, json.dumps(out, indent=1, default=float) + "\n")
    return out
