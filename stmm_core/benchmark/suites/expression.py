"""Suite ``expression``: per-gene Pearson r of predicted expression, leave one section out.

``pearson_all``: mean over all target genes; ``pearson_hvg50``: mean over the 50 most variable targets of the
training sections (chosen before any held-out data is read); ``pearson_spot``: per-spot r across targets.
See :mod:`stmm_core.benchmark.suites.folds` for what each pipeline trains.
"""

from __future__ import annotations

from stmm_core.benchmark.runner import Context, Metrics, Unit
from stmm_core.benchmark.suites.folds import fold_units

METRICS = ["pearson_hvg50", "pearson_all", "pearson_spot", "mse"]
PRIMARY = "pearson_hvg50"
HIGHER_IS_BETTER = {"pearson_hvg50": True, "pearson_all": True, "pearson_spot": True, "mse": False}
DEFAULT_DATASETS = ["her2st-C*"]
DEFAULT_PIPELINES = ["magic", "hest-ridge", "ridge-cv", "stain-ridge", "knn-expression", "train-mean"]
DEFAULT_SEEDS = 1
KEYS = METRICS


def describe(m: Metrics) -> str:
    return (f"r HVG-50 {m.get('pearson_hvg50') or 0:.3f}  r all {m.get('pearson_all') or 0:.3f}  "
            f"r spot {m.get('pearson_spot') or 0:.3f}")


def units(ctx: Context) -> list[Unit]:
    """Leave-one-section-out units, one per (pipeline, seed, held-out section)."""
    return fold_units(ctx, KEYS, keep_missing=True)


def notes(ctx: Context) -> list[str]:
    from stmm_core.benchmark.family_bench import family_notes

    return ["Leave one section out: each row trains on the other sections and predicts the held-out one; "
            "expression space log1p(counts / total * 1e4); genes constant in the held-out truth are excluded.",
            "Summary rows pool the folds: mean ± sd over folds (and seeds)."] + family_notes(ctx, "expression")
