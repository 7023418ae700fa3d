"""Honest expression baselines: training mean, CV ridge, stain-stats ridge, nearest neighbours (fast, synthetic)."""

from __future__ import annotations

import numpy as np


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1, 2], 60)
    x = rng.standard_normal((180, 20))
    w = rng.standard_normal((20, 8))
    y = x @ w * 0.3 + 0.5 * rng.standard_normal((180, 8)) + 2.0
    xt = rng.standard_normal((50, 20))
    yt = xt @ w * 0.3 + 0.5 * rng.standard_normal((50, 8)) + 2.0
    return x, y, xt, yt, groups


def test_cv_ridge_beats_the_mean_and_chooses_its_penalty_on_training_sections_only():
    from stmm_magic.baseline import RIDGE_ALPHAS, mean_predictor, ridge_cv

    x, y, xt, yt, groups = _problem()
    mean, _ = mean_predictor(y, len(xt))
    np.testing.assert_allclose(mean, np.repeat(y.mean(0, keepdims=True), 50, 0), rtol=1e-6)
    pred, info = ridge_cv(x, y, xt, groups, n_components=None)
    assert info["alpha"] in RIDGE_ALPHAS and info["alpha"] < 1e4  # a real signal: not the largest penalty
    assert ((pred - yt) ** 2).mean() < 0.6 * ((mean - yt) ** 2).mean()
    # pure-noise features: CV picks a large penalty and the prediction falls back to about the mean
    noise = np.random.default_rng(5).standard_normal(x.shape)
    pred_n, info_n = ridge_cv(noise, y, xt, groups, n_components=None)
    assert info_n["alpha"] >= 100 and ((pred_n - yt) ** 2).mean() < 1.1 * ((mean - yt) ** 2).mean()


def test_knn_predictor_reads_the_neighbours_in_feature_space():
    from stmm_magic.baseline import KNN_K, knn_predictor

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 10)) * 5
    lab = rng.integers(0, 4, 200)
    x = centres[lab] + rng.standard_normal((200, 10)) * 0.3
    y = np.eye(4)[lab] * 3.0
    lab_t = rng.integers(0, 4, 40)
    xt = centres[lab_t] + rng.standard_normal((40, 10)) * 0.3
    pred, info = knn_predictor(x, y, xt, np.repeat([0, 1], 100), n_components=None)
    assert info["k"] in KNN_K
    assert (pred.argmax(1) == lab_t).mean() > 0.95


def test_baselines_run_as_benchmark_pipelines_on_the_same_folds(tmp_path):
    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.testing.synthetic import make_synthetic_adata

    paths = []
    for i in range(3):
        p = tmp_path / f"sec{i}.h5ad"
        make_synthetic_adata(n_spots=64, n_genes=100, n_domains=3, seed=20 + i).write_h5ad(p)
        paths.append(str(p))
    small = {"decoder.n_targets": 40, "gene.n_genes": 32}
    names = ["train-mean", "ridge-cv", "stain-ridge", "knn-expression"]
    res = run_benchmark("expression", pipelines=names, datasets=paths, folds=["sec1"], progress=False,
                        log=lambda m: None, work_dir=tmp_path / "work", sets={n: small for n in names}).result
    rows = {r.pipeline: r for r in res.rows}
    assert all(rows[n].status == "ok" for n in names), {n: rows[n].error for n in names}
    assert np.isfinite(rows["train-mean"].metrics["mse"]) and rows["train-mean"].metrics.get("top1") is None
    assert rows["ridge-cv"].details["fit"]["cv"] == "leave one training section out"
    assert rows["knn-expression"].details["fit"]["k"] > 0
    assert rows["stain-ridge"].details["image_init_params_sha256"].startswith("stain-stats")


def test_verdicts_use_paired_differences_and_list_losing_folds():
    from stmm_core.benchmark.report import verdicts
    from stmm_core.benchmark.results import Row, summarise
    from stmm_core.benchmark.verdicts import paired_stats

    folds = ["s1", "s2", "s3", "s4"]
    label = "4 folds (s1, s2, s3, s4)"
    vals = {"magic": [0.30, 0.31, 0.20, 0.33], "ridge-cv": [0.25, 0.26, 0.24, 0.27],
            "train-mean": [0.0] * 4}
    spot = {"magic": 0.75, "ridge-cv": 0.74, "train-mean": 0.73}
    rows = [Row(pipeline=p, dataset=f, fold=f, seed=1, status="ok",
                metrics={"pearson_hvg50": v, "pearson_spot": spot[p]})
            for p, vs in vals.items() for f, v in zip(folds, vs)]

    class R:  # the two fields verdicts read
        summary = summarise(rows, ["pearson_hvg50", "pearson_spot"], {f: label for f in folds})

    R.rows = rows
    lines = verdicts(R, "pearson_hvg50", {"pearson_hvg50": True}, {"ridge-cv", "train-mean"})
    main = next(x for x in lines if "**magic**" in x)
    assert "is not resolved from the best baseline **ridge-cv**" in main  # +0.03 mean, but one fold loses
    assert "Loses on: s3 seed 1 (-0.040)" in main and "95% CI" in main and "3 of 4" in main
    assert any("training mean's 0.730" in x and "magic 0.750 (+0.020)" in x for x in lines)
    st = paired_stats([0.1, 0.12, 0.09, 0.11])
    assert st["lo"] > 0 and st["wins"] == 4
