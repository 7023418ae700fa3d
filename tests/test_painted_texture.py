"""End-to-end informative-image bench: the painter, and a painted texture switching the automatic weight on."""

from __future__ import annotations

import numpy as np
import pytest


def _section(tmp_path, n_spots=196, n_domains=3):
    from stmm_core.pipeline.run import load_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    make_synthetic_adata(n_spots=n_spots, n_genes=60, n_domains=n_domains, seed=0).write_h5ad(tmp_path / "s.h5ad")
    return load_section(tmp_path / "s.h5ad")


def _tile_stats(section, scale):
    """Mean RGB + mean absolute horizontal/vertical gradients of the tile around each spot (orientation cue)."""
    img = section.image.array.astype(np.float64)
    half = int(0.5 * section.spot_diameter * scale)
    out = []
    for x, y in np.rint(section.coords * scale).astype(int):
        t = img[y - half:y + half, x - half:x + half]
        out.append(np.r_[t.mean((0, 1)), np.abs(np.diff(t, axis=0)).mean(), np.abs(np.diff(t, axis=1)).mean()])
    return np.array(out)


def test_painter_dials_domain_information_and_is_seeded(tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from stmm_core.benchmark.painted_texture import paint_image, painted_section

    section = _section(tmp_path)
    truth = section.obs["domain"].astype(str).to_numpy()
    labels = truth.astype(object)
    labels[:5] = None  # unlabelled spots: random texture only
    scale = 0.4
    probe = {}
    for s in (0.0, 1.0):
        painted = painted_section(section, labels, s, seed=0, scale=scale)
        assert painted.image_scale == scale and painted.counts is section.counts
        assert painted.image.array.dtype == np.uint8 and painted.image.array.ndim == 3
        stats = _tile_stats(painted, scale)
        stats = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
        probe[s] = adjusted_rand_score(truth, KMeans(3, n_init=5, random_state=0).fit_predict(stats))
    assert probe[0.0] < 0.1 < 0.8 < probe[1.0]
    # seeded: the same seed paints the same image, another seed another one
    codes = np.unique(truth, return_inverse=True)[1]
    kw = dict(spot_diameter=60.0, scale=scale, strength=0.5)
    np.testing.assert_array_equal(paint_image(section.coords, codes, seed=3, **kw),
                                  paint_image(section.coords, codes, seed=3, **kw))
    assert not np.array_equal(paint_image(section.coords, codes, seed=3, **kw),
                              paint_image(section.coords, codes, seed=4, **kw))
    with pytest.raises(ValueError, match="strength"):
        paint_image(section.coords, codes, strength=1.5, spot_diameter=60.0, scale=scale)


def test_a_strong_painted_texture_switches_the_automatic_image_weight_on(tmp_path):
    """Tiles cut from the painted image, the recipe's ResNet-50 (random init): weight 1 at strength 1, 0 at 0."""
    from stmm_core.benchmark.painted_texture import painted_section
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.fit import fit_graph_fusion

    section = _section(tmp_path)
    labels = section.obs["domain"].astype(str).to_numpy()
    sets = {"train.epochs": 1, "gene.n_top_genes": 40, "gene.pca": 10, "image.weights": "random",
            "fusion.img_weight": "auto"}
    spec = compose_spec(recipe="stereomm", sets=sets)
    weights = {}
    for s in (0.0, 1.0):
        painted = painted_section(section, labels, s, seed=0, scale=32.0 / section.spot_diameter)
        res = fit_graph_fusion(spec, painted, n_domains=None, progress=False)
        ev = res.info["image_weight"]
        assert res.info["image"]["input_px"] == 32  # the tiles were cut from the painted image
        weights[s] = (ev["weight"], ev["prediction_ratio"])
    assert weights[1.0][0] == 1.0 and weights[0.0][0] == 0.0, weights
