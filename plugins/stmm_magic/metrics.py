"""Moved to :mod:`stmm_core.expression_metrics` (shared by every family); kept as an alias."""

from stmm_core.expression_metrics import _pearson_columns, mse, pearson_per_gene, pearson_per_spot, retrieval_topk  # noqa: F401
