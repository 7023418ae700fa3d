"""Figures: unlabelled spots are named, not 'nan'; scale bars in µm when the data say it, else px; the loss figure
stacks the weighted terms so they add up to the loss; readable benchmark metric names; the domain → label
mapping as written to metrics.json."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from stmm_core.benchmark.plots import pretty
from stmm_core.pipeline.run import domain_label_map
from stmm_core.plots import UNLABELLED, display_labels, microns_per_px, plot_loss


def test_unlabelled_and_mapping():
    labels = display_labels(np.array(["L1", np.nan, "", "WM", None], dtype=object))
    assert list(labels) == ["L1", UNLABELLED, UNLABELLED, "WM", UNLABELLED]
    pred = np.array([0, 0, 1, 1, 2, 2])
    truth = np.array(["L1", "L1", "WM", "WM", "WM", np.nan], dtype=object)
    mapping = domain_label_map(pred, truth)
    assert mapping["0"] == "L1" and mapping["1"] == "WM" and mapping["2"].startswith("extra")


def test_microns_per_px():
    sec = lambda sf: SimpleNamespace(meta={"scalefactors": sf})  # noqa: E731
    assert microns_per_px(sec({"spot_diameter_fullres": 110.0})) == 0.5  # Visium: 55 µm spots
    assert microns_per_px(sec({"microns_per_pixel": 0.27, "spot_diameter_fullres": 7.0, "bin_size_um": 2})) == 0.27
    assert microns_per_px(sec({})) is None


def test_loss_figure_weights_add_up(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = {}
    original = matplotlib.axes.Axes.stackplot

    def spy(self, x, *ys, **kw):
        seen["sum"] = np.sum(ys, axis=0)
        seen["labels"] = kw.get("labels")
        return original(self, x, *ys, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "stackplot", spy)
    hist = [{"epoch": i, "recon": 1.0 / (i + 1), "kl": 3.0, "loss": 1.0 / (i + 1) + 0.1 * 3.0} for i in range(20)]
    plot_loss(hist, tmp_path / "loss.png", weights={"kl": 0.1})
    assert np.allclose(seen["sum"], [h["loss"] for h in hist]) and seen["labels"] == ["recon", "0.1 × kl"]
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_readable_metric_names():
    assert pretty("pearson_hvg50").startswith("per-gene r") and pretty("read_s") == "read"
    assert "decoder" in pretty("top1_decoder") and pretty("ari") == "ARI"
