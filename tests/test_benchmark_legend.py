"""The benchmark bar chart's legend: one entry per pipeline over all panels; "(failed)" only for real failures."""

from __future__ import annotations

from types import SimpleNamespace


def test_a_pipeline_absent_from_the_last_panel_is_not_called_failed():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from stmm_core.benchmark.plots import _legend_handles

    rows = [SimpleNamespace(pipeline="a", dataset="d1", metric="ari", mean=0.5),
            SimpleNamespace(pipeline="a", dataset="d2", metric="ari", mean=0.4),
            SimpleNamespace(pipeline="b", dataset="d1", metric="ari", mean=0.3),  # not run on d2 (the last panel)
            SimpleNamespace(pipeline="c", dataset="d1", metric="ari", mean=None)]  # failed everywhere
    cmap = plt.get_cmap("tab10")
    handles = _legend_handles(rows, ["a", "b", "c"], cmap, chance_drawn_any=True)
    assert [h.get_label() for h in handles] == ["a", "b", "c (failed)", "chance level"]
    assert handles[1].get_facecolor()[:3] == cmap(1)[:3]  # the bar colour of b, not of the last panel
