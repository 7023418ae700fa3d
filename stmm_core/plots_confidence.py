"""The confidence map of a consensus run (``confidence.png`` beside ``domains.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stmm_core.plots import _background, _plt, match_to_truth

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def plot_confidence(section: "Section", labels: np.ndarray, confidence: np.ndarray, path: Path,
                    truth: np.ndarray | None = None, title: str = "stmm consensus",
                    summary: dict | None = None) -> None:
    """Two panels: the consensus domains, and the per-spot agreement (fraction of seeds whose aligned label is the
    consensus label; 1 = every seed agrees). Spots where the seeds disagree are where the domain boundary is
    uncertain."""
    plt = _plt()
    bg, f = _background(section)
    xy = section.coords * f
    diam = (section.spot_diameter or 0) * f
    size = max(2.0, min(60.0, (diam * 0.9) ** 2 * (72 / 100) ** 2)) if diam else 8.0
    lab = np.asarray(labels).astype(str)
    name = "consensus domains"
    if truth is not None:
        lab = match_to_truth(labels, np.asarray(truth, dtype=object).astype(str))
        name += " (named after the best-matching layer)"
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 6))
    cmap = plt.get_cmap("tab20")
    for i, c in enumerate(sorted(set(lab), key=lambda s: (len(s), s))):
        m = lab == c
        axes[0].scatter(xy[m, 0], xy[m, 1], s=size, color=cmap(i % 20), label=c, linewidths=0)
    axes[0].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.5, frameon=False)
    axes[0].set_title(name)
    conf = np.asarray(confidence, dtype=float)
    order = np.argsort(-conf, kind="stable")  # low confidence drawn last (on top)
    sc = axes[1].scatter(xy[order, 0], xy[order, 1], s=size, c=conf[order], cmap="magma", vmin=0.0, vmax=1.0,
                         linewidths=0)
    fig.colorbar(sc, ax=axes[1], fraction=0.046, pad=0.04, label="fraction of seeds agreeing")
    axes[1].set_title(f"per-spot confidence (mean {conf.mean():.2f}; {np.mean(conf >= 1 - 1e-6):.0%} of spots unanimous)")
    for ax in axes:
        if bg is not None:
            ax.imshow(bg, alpha=0.6, zorder=0)
        ax.set_aspect("equal")
        if bg is None:
            ax.invert_yaxis()
        ax.axis("off")
    sub = title
    if summary:
        sub += (f"  ·  {summary.get('n')} seeds, seed-to-seed ARI mean {summary.get('seed_ari_mean', 0):.3f}, "
                f"min {summary.get('seed_ari_min', 0):.3f}")
    fig.suptitle(sub)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
