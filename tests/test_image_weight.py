"""Automatic image weight and the feature-level informative-image bench (synthetic data, fast)."""

from __future__ import annotations

import numpy as np
import pytest


def _grid(n_side: int = 30, n_domains: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(n_side), np.arange(n_side))
    coords = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64) * 100.0
    dom = np.minimum((coords[:, 0] / (100.0 * n_side) * n_domains).astype(int), n_domains - 1)  # vertical bands
    onehot = np.eye(n_domains)[dom]
    gene = onehot @ rng.standard_normal((n_domains, 20)) + 0.5 * rng.standard_normal((len(dom), 20))
    return coords, dom, gene, rng


def _edges(coords: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    pairs = cKDTree(coords).query_pairs(101.0, output_type="ndarray")
    return np.concatenate([pairs.T, pairs[:, ::-1].T], 1)


def test_informative_features_dial_from_real_to_label_informative():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from stmm_core.benchmark.image_signal import informative_features

    coords, dom, _, rng = _grid()
    real = rng.standard_normal((len(dom), 64)) * rng.uniform(0.5, 3.0, 64) + 5.0
    labels = np.array([f"L{d}" for d in dom], dtype=object)
    labels[:10] = None  # unlabelled spots get noise only
    x0 = informative_features(real, labels, 0.0)
    np.testing.assert_allclose(x0, (real - real.mean(0)) / real.std(0), rtol=1e-4, atol=1e-5)  # ratio 0 = real
    probe = {r: adjusted_rand_score(dom, KMeans(4, n_init=3, random_state=0).fit_predict(
        informative_features(real, labels, r, seed=1))) for r in (0.0, 2.0)}
    assert probe[0.0] < 0.05 < 0.8 < probe[2.0]
    assert not np.array_equal(informative_features(real, labels, 1.0, seed=1),
                              informative_features(real, labels, 1.0, seed=2))
    with pytest.raises(ValueError):
        informative_features(real, labels, -1.0)


def test_auto_weight_is_high_for_an_informative_image_and_zero_for_noise():
    from stmm_core.pipeline.image_weight import auto_image_weight, morans_i

    coords, dom, gene, rng = _grid()
    edges = _edges(coords)
    informative = np.eye(4)[dom] @ rng.standard_normal((4, 32)) + 0.5 * rng.standard_normal((len(dom), 32))
    noise = rng.standard_normal((len(dom), 32))
    w_inf, ev_inf = auto_image_weight(informative, gene, coords, edges)
    w_noise, ev_noise = auto_image_weight(noise, gene, coords, edges)
    assert w_inf > 0.9 and ev_inf["cv_r2_image_to_gene"] > 0.5
    assert w_noise == 0.0 and ev_noise["cv_r2_image_to_gene"] < 0.05
    assert ev_inf["morans_i_image"] > 0.5 > ev_noise["morans_i_image"]
    # 0-or-1: never a small weight; on exactly when the prediction ratio clears its threshold
    seen = set()
    for a in (0.05, 0.1, 0.2, 0.4, 1.0):
        w, ev = auto_image_weight(a * informative + noise, gene, coords, edges)
        on = ev["prediction_ratio"] >= 0.65
        assert w == (1.0 if on else 0.0) and ev["prediction_margin"] == round(ev["prediction_ratio"] - 0.65, 4)
        seen.add(w)
    assert seen == {0.0, 1.0}
    # Moran's I: bands are coherent, a checkerboard is anti-coherent
    checker = ((coords[:, 0] // 100 + coords[:, 1] // 100) % 2)[:, None]
    assert morans_i(checker, edges, len(dom))[0] < -0.9 < 0.9 < morans_i(dom[:, None].astype(float), edges, len(dom))[0]


def test_blocked_folds_keep_blocks_together_and_use_every_fold():
    from stmm_core.pipeline.image_weight import block_folds

    coords, _, _, _ = _grid()
    folds = block_folds(coords, n_folds=5, grid=6)
    assert set(folds.tolist()) == set(range(5))
    cell = (coords // (3000 / 6)).astype(int)
    for c in {tuple(r) for r in cell.tolist()}:  # a 5x5-spot block lies in a single fold
        assert len(set(folds[(cell == c).all(1)].tolist())) == 1


def test_auto_weight_leaves_an_uninformative_image_out_of_the_fit(tmp_path):
    """img_weight='auto' with noise image features: weight 0, image left out, the same fit as without image."""
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import load_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    make_synthetic_adata(n_spots=144, n_genes=60, n_domains=3, seed=0).write_h5ad(tmp_path / "s.h5ad")
    section = load_section(tmp_path / "s.h5ad")
    sets = {"train.epochs": 15, "gene.n_top_genes": 40, "gene.pca": 10, "fusion.img_weight": "auto"}
    spec = compose_spec(recipe="stereomm", sets=sets)
    noise = np.random.default_rng(0).standard_normal((section.n_spots, 16)).astype(np.float32)
    res = fit_graph_fusion(spec, section, n_domains=3, progress=False, image_features=noise)
    ev = res.info["image_weight"]
    assert ev["requested"] == "auto" and ev["weight"] == 0.0 and ev["image_left_out"]
    assert res.spec.components["image"] is None and res.spec.components["fusion"].params["img_weight"] == 0.0
    plain = compose_spec(recipe="stereomm-expression", sets={k: v for k, v in sets.items() if "fusion" not in k})
    ref = fit_graph_fusion(plain, section, n_domains=3, progress=False)
    np.testing.assert_array_equal(res.embedding, ref.embedding)

    # an image that carries the domains gets a positive weight and is fused
    truth = np.unique(section.obs["domain"].astype(str).to_numpy(), return_inverse=True)[1]
    rng = np.random.default_rng(1)
    good = (np.eye(3)[truth] @ rng.standard_normal((3, 16)) + 0.3 * rng.standard_normal((section.n_spots, 16)))
    res2 = fit_graph_fusion(spec, section, n_domains=3, progress=False, image_features=good.astype(np.float32))
    assert res2.info["image_weight"]["weight"] == 1.0
    assert res2.spec.components["image"] is not None
    # ... and the fit is the fixed-weight fit bit for bit (what the bench's final_rule relies on)
    fixed = compose_spec(recipe="stereomm", sets={**sets, "fusion.img_weight": 1.0})
    res3 = fit_graph_fusion(fixed, section, n_domains=3, progress=False, image_features=good.astype(np.float32))
    np.testing.assert_array_equal(res2.embedding, res3.embedding)
    np.testing.assert_array_equal(res2.labels, res3.labels)


def test_auto_weight_outside_the_pipeline_is_a_clear_error():
    import torch

    from stmm_core.errors import SpecError
    from stmm_core.pipeline.target import reconstruction_target
    from stmm_fusion.attention import CrossAttentionFusion
    from stmm_fusion.params import AttentionFusionParams

    fusion = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, img_weight="auto"))
    fusion.setup(4, 3)
    with pytest.raises(SpecError, match="img_weight"):
        reconstruction_target("inputs", fusion, torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        AttentionFusionParams(img_weight="often")


def test_bench_merge_derives_the_current_rule_exactly_or_refuses():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "image_signal.py"
    spec = importlib.util.spec_from_file_location("image_signal_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ev = {"requested": "auto", "image_left_out": False}
    weak = {**ev, "weight": 0.0, "coherence_ratio": 0.73, "prediction_ratio": 0.55}
    strong = {**ev, "weight": 0.0, "coherence_ratio": 0.77, "prediction_ratio": 0.76}
    runs = [
        {"section": "s", "seed": 0, "pipeline": "stereomm-expression", "ratio": None, "ari": 0.5, "nmi": 0.6},
        # earlier (graded) rule: weight 0.08 on a weak image; the current rule gives 0 -> the expression fit
        {"section": "s", "seed": 0, "pipeline": "stereomm", "ratio": 0.0, "ari": 0.4, "nmi": 0.5,
         "image_weight": {**weak, "weight": 0.08}},
        # earlier rule left a useful image out; the current rule gives 1 -> the fixed-weight-1 run's scores
        {"section": "s", "seed": 0, "pipeline": "stereomm", "ratio": 0.25, "ari": 0.5, "nmi": 0.6,
         "image_weight": strong},
        {"section": "s", "seed": 0, "pipeline": "stereomm[img_weight=1]", "ratio": 0.25, "ari": 0.96, "nmi": 0.95,
         "image_weight": {"weight": 1.0, "auto_evidence": strong}},
        # only a fixed-weight run recorded: its evidence gives the automatic row
        {"section": "s", "seed": 0, "pipeline": "stereomm[img_weight=1]", "ratio": 0.5, "ari": 0.97, "nmi": 0.96,
         "image_weight": {"weight": 1.0, "auto_evidence": strong}},
    ]
    out = {(r["pipeline"], r["ratio"]): r for r in mod.final_rule(runs)}
    assert out[("stereomm", 0.0)]["ari"] == 0.5 and out[("stereomm", 0.0)]["reused_expression_fit"]
    assert out[("stereomm", 0.0)]["ari_earlier_rule"] == 0.4
    assert out[("stereomm", 0.25)]["ari"] == 0.96 and out[("stereomm", 0.25)]["image_weight"]["weight"] == 1.0
    assert out[("stereomm", 0.5)]["ari"] == 0.97 and out[("stereomm[img_weight=1]", 0.5)]["ari"] == 0.97
    summary = {(r["pipeline"], r["ratio"]): r for r in mod.summarise(list(out.values()))}
    assert summary[("stereomm", 0.25)]["diff_vs_expression"] == [0.46]
    with pytest.raises(SystemExit, match="img_weight=1"):  # weight 1 needed but no fixed-weight run recorded
        mod.final_rule(runs[:3])
