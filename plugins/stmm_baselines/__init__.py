"""Baseline components for benchmarks: a no-training graph model and an image-only fusion."""
