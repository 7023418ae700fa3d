"""``-k auto``: K chosen without labels at the knee of the GMM BIC curve, candidates reported in the summary and
metrics.json; bad ``-k`` values end in one line naming the flag."""

from __future__ import annotations

import json

import numpy as np

from conftest import run_stmm

from stmm_core.pipeline.auto_k import candidates_line, choose_n_domains


def test_knee_finds_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, size=(4, 8))
    x = np.concatenate([c + rng.normal(0, 1, size=(150, 8)) for c in centres]).astype(np.float32)
    k, rep = choose_n_domains(x, seed=0, k_min=2, k_max=10)
    assert k == 4, candidates_line(rep)
    assert [c["k"] for c in rep["candidates"]] == list(range(2, 11))
    assert all("bic" in c and "silhouette" in c for c in rep["candidates"])
    assert "knee" in rep["criterion"] and "4*" in candidates_line(rep)


def test_auto_k_end_to_end(synthetic_h5ad, tmp_path):
    out = tmp_path / "run"
    fast = ["--set", "train.epochs=30", "--set", "gene.n_top_genes=100", "--set", "graph.hidden=[32]", "-q"]
    r = run_stmm(["run", "stereomm-expression", "--data", str(synthetic_h5ad), "-o", str(out), "-k", "auto",
                  "--labels", "domain", *fast])
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    auto = metrics["info"]["auto_k"]
    assert metrics["n_domains"] == auto["chosen"] and len(auto["candidates"]) >= 2
    assert "K chosen without labels" in r.stdout and "candidates:" in r.stdout
    assert set(metrics["clustering"]["domain_to_label"]) == {str(i) for i in range(auto["chosen"])}


def test_bad_k_values(synthetic_h5ad, tmp_path, capsys):
    from stmm_core.cli.main import main

    for bad in ("0", "seven"):
        code = main(["run", "stereomm-expression", "--data", str(synthetic_h5ad), "-o", str(tmp_path / "x"),
                     "-k", bad])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and "-k" in err and "auto" in err, err
        assert not (tmp_path / "x").exists()
