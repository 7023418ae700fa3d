"""The resolution guard and the random-weights / coarse-image line: metrics block, console summary, model card
(with full parameter values, installation as shipped, limitations and citations) and the figure title text."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from stmm_core.composing import compose_spec
from stmm_core.hub.card import render_card
from stmm_core.pipeline.image_caveats import MIN_SPOT_PX, image_caveat, short_caveat
from stmm_graph_fusion.run import summary_lines


def _section(scale: float, diameter: float | None = 100.0):
    xy = np.stack(np.meshgrid(np.arange(10) * 140.0, np.arange(10) * 140.0), -1).reshape(-1, 2)
    return SimpleNamespace(image=object(), image_scale=scale, spot_diameter=diameter, coords=xy, n_spots=len(xy),
                           meta={"image_key": "lowres"})


def test_coarse_image_and_random_weights_are_reported():
    spec = compose_spec("stereomm", None, {"image.weights": "random"})
    cav = image_caveat(spec, _section(0.045))  # lowres-like: 4.5 px per spot
    assert cav["coarse"] and cav["random_weights"] and cav["spot_image_px"] == 4.5
    assert "4.5 image pixels" in cav["warning"] and "full-resolution" in cav["warning"] and "--scale 1" in cav["warning"]
    assert "random resnet50 weights" in cav["line"] and "coarse image (4.5 px per spot)" in cav["line"]
    assert "coarse image (4.5 px/spot)" in short_caveat(cav)
    # without a diameter: the median spacing (140 full-res px) stands in
    assert image_caveat(spec, _section(0.045, None))["spot_image_px"] == round(140 * 0.045, 2)
    hires = _section(0.1)
    hires.meta = {"image_key": "hires"}
    warning = image_caveat(spec, hires)["warning"]
    assert "the full-resolution image" in warning and "hires_image" not in warning


def test_fine_image_with_pretrained_weights_has_no_caveat():
    spec = compose_spec("stereomm")
    cav = image_caveat(spec, _section(1.0))
    assert cav["spot_image_px"] >= MIN_SPOT_PX and not cav["coarse"] and not cav["random_weights"]
    assert cav["warning"] is None and cav["line"] is None and short_caveat(cav) is None
    assert image_caveat(compose_spec("stereomm-expression"), _section(0.045)) is None  # no image branch


def _metrics(cav):
    return {"section": "151676", "data": "151676.h5ad", "n_domains": 7, "seed": 0, "stmm_version": "0",
            "wall_seconds": 1.0, "peak_rss_mb": 1.0, "device": "cpu", "files": ["result.h5ad"],
            "stages": [{"name": "read", "seconds": 0.1}], "image_caveat": cav,
            "info": {"n_spots": 100, "n_genes": 50, "image": {"encoder": "timm/resnet50", "input_px": 32,
                                                               "cached": False}},
            "clustering": {"ari": 0.5, "nmi": 0.6, "n_labelled": 90, "label_column": "layer"}}


def test_line_in_console_and_model_card():
    spec = compose_spec("stereomm", None, {"image.weights": "random"})
    metrics = _metrics(image_caveat(spec, _section(0.045)))
    lines = summary_lines(metrics, "run")
    assert sum("note: image branch ran on random" in ln for ln in lines) == 1
    card = render_card(spec, metrics, figures=["domains.png"])
    assert "image branch ran on random" in card and "![domains.png](domains.png)" in card
    assert "## Limitations" in card and "**random weights**" in card and "**coarse**" in card
    assert "Tuning:" in card and "151510" in card  # the recipe's defaults note
    assert "Maynard" in card and "Kipf & Welling" in card and "StereoMM" in card
    assert "pip install stmm" not in card and "pypi.org" not in card and "ORG/NAME" not in card
    assert "./dev env" in card
    # full parameter values, no truncation
    long = compose_spec("stereomm", {"image": "uni2-h"})
    card = render_card(long, None)
    assert '"mlp_layer": "timm.layers.SwiGLUPacked"' in card and "…" not in card
    assert "not a tuned recipe" in card
    her2 = render_card(compose_spec("graphst"), {**_metrics(None), "section": "A1", "data": "A1.h5ad"})
    assert "Andersson" in her2 and "GraphST" in her2 and "Maynard" not in her2


def test_summary_says_when_fewer_domains_remain():
    spec = compose_spec("stereomm", None, {"image.weights": "random"})
    metrics = {**_metrics(image_caveat(spec, _section(1.0))), "n_domains": 9, "n_domains_found": 4}
    metrics.pop("clustering")
    lines = summary_lines(metrics, "run")
    assert any("4 domains found, not K=9" in ln for ln in lines)
    assert not any("not computed" in ln for ln in lines)  # K was given: the 'no K' line must not appear
