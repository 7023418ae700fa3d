"""Suite ``retrieval``: image → expression top-1/top-5 among all spots of a held-out section, with chance.

Every spot's image tile is a query; the candidates are the expression profiles of all N spots of the
held-out section; chance is k/N. Uses the same folds (and the same trained models, via ``--work``) as the
``expression`` suite.
"""

from __future__ import annotations

from stmm_core.benchmark.runner import Context, Metrics, Unit
from stmm_core.benchmark.suites.folds import fold_eval, fold_pairs

METRICS = ["top1", "top5", "chance_top1", "chance_top5", "top1_decoder", "top5_decoder"]
PRIMARY = "top1"
HIGHER_IS_BETTER = {m: True for m in METRICS}
DEFAULT_DATASETS = ["her2st-C*"]
DEFAULT_PIPELINES = ["magic", "hest-ridge"]
DEFAULT_SEEDS = 1


def describe(m: Metrics) -> str:
    return (f"top-1 {m.get('top1') or 0:.3f}  top-5 {m.get('top5') or 0:.3f}  "
            f"(chance {m.get('chance_top1') or 0:.3f} / {m.get('chance_top5') or 0:.3f})")


def units(ctx: Context) -> list[Unit]:
    out = []
    for pipe in ctx.pipelines:
        for seed in ctx.seeds:
            for held, train, test in fold_pairs(ctx):
                def fn(pipe=pipe, seed=seed, held=held, train=train, test=test):
                    res = fold_eval(ctx, pipe, seed, held, train, test)
                    m = {k: res["metrics"].get(k) for k in METRICS if k in res["metrics"]}
                    return m, res["details"]
                out.append(Unit(pipe, held, held, seed, fn))
    return out


def notes(ctx: Context) -> list[str]:
    return ["top1/top5: the pipeline's own image-expression score (magic: contrastive image-gene similarity; "
            "hest-ridge: Pearson r between the predicted and each true profile). top1_decoder/top5_decoder: magic's "
            "stage-2 prediction scored like the ridge (same rule, comparable to hest-ridge's top1/top5).",
            "Chance = 1/N and 5/N with N spots of the held-out section."]
