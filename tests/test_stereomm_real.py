"""The StereoMM recipe on real DLPFC data (skips cleanly without the shared data)."""

from __future__ import annotations

import json

import pytest

from conftest import run_stmm


def test_stereomm_expression_on_dlpfc_151676(shared_data, tmp_path):
    path = shared_data / "dlpfc" / "151676" / "dlpfc_151676_5000genes_lowres.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    out = tmp_path / "run"
    # The image path is exercised by the demo test; with a randomly initialised encoder on the low-res DLPFC
    # image it lowers ARI (see the benchmark), so the quality bar is checked on expression + space.
    r = run_stmm(["run", "stereomm-expression", "--data", str(path), "-o", str(out), "--labels", "layer", "-q"])
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_domains"] == 7
    assert metrics["clustering"]["n_unlabelled"] == 29
    # default settings, no per-section tuning (seeds 0/1/2 gave 0.562/0.549/0.566); published bar (GraphST) 0.559.
    assert metrics["clustering"]["ari"] > 0.45, metrics["clustering"]


def test_demo_command_runs(tmp_path):
    out = tmp_path / "demo"
    r = run_stmm(["demo", "-o", str(out), "--set", "train.epochs=50", "-q"])
    assert r.returncode == 0, r.stderr
    assert "ARI" in r.stdout and "random" in r.stderr
    assert (out / "domains.png").stat().st_size > 10_000
