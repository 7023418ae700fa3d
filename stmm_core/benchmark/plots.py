"""Benchmark figures (matplotlib, Agg): bar charts with error bars, stage-time bars, per-section domain maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stmm_core.benchmark.results import BenchmarkResult
from stmm_core.plots import UNLABELLED, add_scale_bar, display_labels, match_to_truth

#: Readable names of result keys, for tick labels and legends.
METRIC_NAMES: dict[str, str] = {
    "ari": "ARI", "nmi": "NMI",
    "pearson_hvg50": "per-gene r\n(50 training HVGs)", "pearson_all": "per-gene r\n(all target genes)",
    "pearson_spot": "per-spot r", "mse": "mean squared error",
    "top1": "top-1", "top5": "top-5", "top1_decoder": "top-1\n(decoder prediction)",
    "top5_decoder": "top-5\n(decoder prediction)",
    "read_s": "read", "tiling_s": "tiling", "image_encoding_s": "image encoding", "gene_features_s": "gene features",
    "graph_s": "spatial graph", "train_s": "training", "clustering_s": "clustering",
}

#: y-axis label of a bar chart, by its first metric.
Y_LABELS: dict[str, str] = {
    "ari": "agreement with the labels (ARI, NMI)",
    "pearson_hvg50": "Pearson r (predicted vs measured)",
    "top1": "fraction of spots whose expression is retrieved",
}


def pretty(key: str) -> str:
    """A readable name for a result key (unchanged when unknown)."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def bar_chart(result: BenchmarkResult, metrics: list[str], path: Path, title: str,
              chance: dict[str, str] | None = None, ylabel: str | None = None) -> Path | None:
    """Grouped bars: one group per metric, one bar per pipeline (mean, error bar = sd); failed = hatched gap.

    *chance* maps a metric to the metric holding its chance level, drawn as a dashed line over its group.
    """
    plt = _plt()
    rows = [s for s in result.summary if s.metric in metrics]
    if not rows:
        return None
    datasets = sorted({s.dataset for s in rows})
    pipes = [p.name for p in result.pipelines if any(s.pipeline == p.name for s in rows)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6.0, 1.1 * len(metrics) * len(pipes) ** 0.8 + 3),
                                                         4.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    width = 0.8 / max(len(pipes), 1)
    for ax, ds in zip(axes[0], datasets):
        look = {(s.pipeline, s.metric): s for s in rows if s.dataset == ds}
        for i, p in enumerate(pipes):
            xs, ys, es, failed = [], [], [], []
            for j, m in enumerate(metrics):
                s = look.get((p, m))
                x = j - 0.4 + width * (i + 0.5)
                if s is None:
                    continue
                if s.mean is None:
                    failed.append(x)
                    continue
                xs.append(x)
                ys.append(s.mean)
                es.append(s.sd or 0.0)
            ax.bar(xs, ys, width * 0.92, yerr=es, capsize=3, color=cmap(i % 10), error_kw={"elinewidth": 1})
            for x in failed:
                ax.text(x, 0, "failed", rotation=90, ha="center", va="bottom", fontsize=7, color="firebrick")
        chance_drawn = False
        for j, m in enumerate(metrics):
            ref = (chance or {}).get(m)
            vals = [s.mean for s in result.summary if s.dataset == ds and s.metric == ref and s.mean is not None]
            if vals:  # one legend entry for all groups instead of a text label per group (they overlapped)
                c = float(np.mean(vals))
                ax.hlines(c, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1,
                          label=None if chance_drawn else "chance level")
                chance_drawn = True
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([pretty(m) for m in metrics], fontsize=8)
        ax.set_ylabel(ylabel or Y_LABELS.get(metrics[0], "value"))
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(ds, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(handles=_legend_handles(rows, pipes, cmap, chance_drawn_any=any(
        ax.get_legend_handles_labels()[1] for ax in axes[0])), loc="center left", bbox_to_anchor=(1.0, 0.5),
        fontsize=8, frameon=False)
    seeds = ", ".join(map(str, result.seeds))
    fig.suptitle(f"{title} (mean ± sd; seed(s) {seeds})", fontsize=11)
    fig.tight_layout()
    from stmm_core.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend_handles(rows: list[Any], pipes: list[str], cmap: Any, chance_drawn_any: bool) -> list[Any]:
    """One entry per pipeline over *all* panels, in its bar colour; "(failed)" only for a pipeline with no
    successful row anywhere (a pipeline that was not run on the last panel's dataset is not a failure)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = []
    for i, p in enumerate(pipes):
        ok = any(s.pipeline == p and s.mean is not None for s in rows)
        handles.append(Patch(color=cmap(i % 10), label=p if ok else f"{p} (failed)"))
    if chance_drawn_any:
        handles.append(Line2D([], [], color="black", linestyle="dashed", linewidth=1, label="chance level"))
    return handles


def stage_bars(result: BenchmarkResult, stages: list[str], path: Path) -> Path | None:
    """Horizontal stacked bars of per-stage seconds, and peak RSS beside them."""
    plt = _plt()
    look = {(s.pipeline, s.dataset, s.metric): s for s in result.summary}
    keys = sorted({(s.pipeline, s.dataset) for s in result.summary},
                  key=lambda k: [p.name for p in result.pipelines].index(k[0]) if k[0] in
                  [p.name for p in result.pipelines] else 99)
    if not keys:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.55 * len(keys) + 1.8), gridspec_kw={"width_ratios": [3, 1]})
    cmap = plt.get_cmap("tab10")
    labels = [f"{p}\n{d}" for p, d in keys]
    for y, (p, d) in enumerate(keys):
        left = 0.0
        for i, st in enumerate(stages):
            s = look.get((p, d, st))
            v = s.mean if s is not None and s.mean is not None else 0.0
            ax.barh(y, v, left=left, color=cmap(i % 10), label=pretty(st) if y == 0 else None)
            left += v
        peak = look.get((p, d, "peak_rss_mb"))
        if peak is not None and peak.mean is not None:
            ax2.barh(y, peak.mean, color="slategray")
            ax2.text(peak.mean, y, f" {peak.mean:.0f}", va="center", fontsize=7)
        elif peak is not None:
            ax.text(0, y, " failed", va="center", color="firebrick", fontsize=8)
    for a in (ax, ax2):
        a.set_yticks(range(len(keys)))
        a.invert_yaxis()
        a.grid(axis="x", alpha=0.3)
    ax.set_yticklabels(labels, fontsize=8)
    ax2.set_yticklabels([])
    ax.set_xlabel("wall time per stage (s)")
    ax2.set_xlabel("peak RSS (MB)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.6 / max(len(keys), 1)), ncol=4, fontsize=8,
              frameon=False)
    fig.suptitle("speed: where the time goes", fontsize=11)
    fig.tight_layout()
    from stmm_core.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def domain_maps(maps: dict[tuple[str, str], dict[str, Any]], path_for: Any) -> list[Path]:
    """One figure per dataset: ground truth, then each pipeline's domains (first seed), ARI in the title."""
    plt = _plt()
    out = []
    for ds in sorted({k[0] for k in maps}):
        items = [(p, v) for (d, p), v in maps.items() if d == ds]
        if not items:
            continue
        panels = [("ground truth", items[0][1]["truth"], None)] + [(p, v["labels"], v) for p, v in items]
        ncol = min(4, len(panels))
        nrow = int(np.ceil(len(panels) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 4.1 * nrow), squeeze=False)
        coords = np.asarray(items[0][1]["coords"], dtype=float)
        size = max(1.0, min(12.0, 20000.0 / max(len(coords), 1)))
        bg = next((v.get("background") for _, v in items if v.get("background") is not None), None)
        view, f = (bg["view"], float(bg["factor"])) if bg is not None else (None, 1.0)
        um = bg.get("um_per_px") if bg is not None else None
        cmap = plt.get_cmap("tab20")
        for ax in axes.ravel():
            ax.axis("off")
        truth = np.asarray(items[0][1]["truth"], dtype=object)
        palette: dict[str, Any] = {}
        for ax, (name, lab, v) in zip(axes.ravel(), panels):
            lab = display_labels(lab) if v is None else match_to_truth(lab, truth)
            xy = np.asarray(v["coords"] if v is not None else coords, dtype=float) * f
            if view is not None:
                ax.imshow(view, alpha=0.6)
            for c in sorted(set(lab), key=lambda s: (len(s), s)):
                m = lab == c
                if c not in palette:
                    palette[c] = cmap(len(palette) % 20)
                color = (0.8, 0.8, 0.8, 1.0) if c == UNLABELLED else palette[c]
                ax.scatter(xy[m, 0], xy[m, 1], s=size, color=color, linewidths=0, label=c)
            if v is None:  # the truth panel carries the legend (predicted domains are renamed to match it)
                ax.legend(loc="upper right", fontsize=6, markerscale=2, frameon=False, bbox_to_anchor=(1.12, 1.0))
            ax.set_aspect("equal")
            if view is None:
                ax.invert_yaxis()
            add_scale_bar(ax, f, um, view.shape[1] if view is not None else float(np.ptp(xy[:, 0]) or 1.0))
            title = name if v is None else f"{name}\nARI {v['ari']:.3f} (seed {v['seed']})"
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"domains on {ds}", fontsize=11)
        fig.tight_layout()
        path = Path(path_for(ds))
        from stmm_core.atomic import atomic_file

        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
        plt.close(fig)
        out.append(path)
    return out
