"""`stmm benchmark`: pipelines against baselines on registered datasets (suites, results, reports, plots)."""
