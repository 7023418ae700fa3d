"""Suite ``retrieval``: image → expression top-1/top-5 among all spots of a held-out section, with chance.

Every spot's image tile is a query; the candidates are the expression profiles of all N spots of the
held-out section; chance is k/N. Uses the same folds (and the same trained models, via ``--work``) as the
``expression`` suite.
"""

from __future__ import annotations

from stmm_core.benchmark.runner import Context, Metrics, Unit
from stmm_core.benchmark.suites.folds import fold_units

METRICS = ["top1", "top5", "chance_top1", "chance_top5", "top1_decoder", "top5_decoder"]
PRIMARY = "top1"
HIGHER_IS_BETTER = {m: True for m in METRICS}
DEFAULT_DATASETS = ["her2st-C*"]
DEFAULT_PIPELINES = ["magic", "hest-ridge", "ridge-cv", "stain-ridge", "knn-expression"]
DEFAULT_SEEDS = 1


def describe(m: Metrics) -> str:
    return (f"top-1 {m.get('top1') or 0:.3f}  top-5 {m.get('top5') or 0:.3f}  "
            f"(chance {m.get('chance_top1') or 0:.3f} / {m.get('chance_top5') or 0:.3f})")


def units(ctx: Context) -> list[Unit]:
    """Leave-one-section-out units, one per (pipeline, seed, held-out section)."""
    return fold_units(ctx, METRICS, keep_missing=False)


def notes(ctx: Context) -> list[str]:
    from stmm_core.benchmark.family_bench import family_notes

    return ["top1/top5: each row's own image-expression score (hest-ridge: Pearson r between the predicted and "
            "each true profile). Chance = 1/N and 5/N with N spots of the held-out section."
            ] + family_notes(ctx, "retrieval")
