"""Benchmark suites: one module per suite, each exposing ``run(ctx)``."""
