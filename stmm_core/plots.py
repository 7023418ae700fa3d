"""PNG plots of a run: spatial domains over the image, loss curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _background(section: "Section", max_side: int = 1200) -> tuple[np.ndarray | None, float]:
    """A downsampled view of the section image and the factor full-res px → view px."""
    if section.image is None or not section.image_scale:
        return None, 1.0
    img = section.image
    step = max(1, int(np.ceil(max(img.height, img.width) / max_side)))
    view = img.read_region(0, 0, img.width, img.height)[::step, ::step]
    return view, float(section.image_scale) / step


def match_to_truth(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rename predicted clusters ``(N,)`` to the truth label ``(N,)`` they overlap most (one-to-one, Hungarian,
    unlabelled spots ignored), so colours agree across panels; unmatched clusters are named ``extra <id>``."""
    from scipy.optimize import linear_sum_assignment

    from stmm_core.metrics import labelled_mask

    labelled = labelled_mask(truth)  # the same rule as the ARI/NMI scores
    pred = np.asarray(pred).astype(str)
    truth = np.asarray(truth, dtype=object).astype(str)
    if not labelled.any():
        return pred
    p_cats, p_idx = np.unique(pred[labelled], return_inverse=True)
    t_cats, t_idx = np.unique(truth[labelled], return_inverse=True)
    table = np.zeros((len(p_cats), len(t_cats)))
    np.add.at(table, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(-table)
    names = {p_cats[r]: t_cats[c] for r, c in zip(rows, cols)}
    cats, inverse = np.unique(pred, return_inverse=True)
    return np.array([names.get(c, f"extra {c}") for c in cats], dtype=object)[inverse]


def plot_domains(section: "Section", labels: np.ndarray, path: Path, truth: Any | None = None,
                 title: str = "stmm domains", scores: dict[str, Any] | None = None) -> None:
    """Spots coloured by domain over the H&E image; ground truth beside it when given."""
    plt = _plt()
    bg, f = _background(section)
    xy = section.coords * f
    from stmm_core.domain_colors import domain_palette

    palette = domain_palette(labels, truth)  # the same colours go into result.h5ad and report.html
    panels, colour = palette.panels, palette.colour
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6), squeeze=False)
    diam = (section.spot_diameter or 0) * f
    size = max(2.0, min(60.0, (diam * 0.9) ** 2 * (72 / 100) ** 2)) if diam else 8.0
    for ax, (name, lab) in zip(axes[0], panels):
        if bg is not None:
            ax.imshow(bg, alpha=0.6)
        for c in sorted(set(lab), key=lambda s: (len(s), s)):
            m = lab == c
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colour[c], label=c, linewidths=0)
        ax.set_title(name)
        ax.set_aspect("equal")
        if bg is None:
            ax.invert_yaxis()
        ax.axis("off")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.5, frameon=False)
    sub = title
    if scores and "ari" in scores:
        sub += f"  ARI {scores['ari']:.3f}  NMI {scores['nmi']:.3f}"
    fig.suptitle(sub)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(history: list[dict[str, float]], path: Path) -> None:
    """Loss terms per epoch (log scale when positive)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        epochs = [h["epoch"] for h in history]
        for key in [k for k in history[0] if k != "epoch"]:
            vals = np.array([h.get(key, np.nan) for h in history], dtype=float)
            ax.plot(epochs, vals, label=key, lw=1.2)
        if all(h["loss"] > 0 for h in history):
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
