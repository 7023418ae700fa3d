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


#: Visium spots are 55 µm across: with Space Ranger's ``spot_diameter_fullres`` this gives µm per full-res px.
VISIUM_SPOT_UM = 55.0

#: How unlabelled spots (NaN / empty / "nan" labels) are named in legends.
UNLABELLED = "unlabelled"


def microns_per_px(section: "Section") -> float | None:
    """µm per full-resolution px when the data say it: ``microns_per_pixel`` in the scale factors (Visium HD,
    Space Ranger 2+), else a Visium spot diameter (55 µm) over ``spot_diameter_fullres``; ``None`` otherwise."""
    sf = (getattr(section, "meta", None) or {}).get("scalefactors") or {}
    try:
        if sf.get("microns_per_pixel"):
            return float(sf["microns_per_pixel"])
        if sf.get("spot_diameter_fullres") and not sf.get("bin_size_um"):
            return VISIUM_SPOT_UM / float(sf["spot_diameter_fullres"])
    except (TypeError, ValueError):
        return None
    return None


def _nice(x: float) -> float:
    """The largest 1/2/5 × 10^k not above *x*."""
    if x <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(x))
    return float(max(m for m in (1, 2, 5, 10) if m * exp <= x) * exp)


def add_scale_bar(ax: Any, view_px_per_fullres_px: float, um_per_fullres_px: float | None,
                  extent_view_px: float) -> None:
    """A scale bar in the lower left: µm when known, else full-resolution px."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    unit_per_view = (um_per_fullres_px or 1.0) / view_px_per_fullres_px  # µm (or full-res px) per plotted unit
    length = _nice(extent_view_px * unit_per_view / 5)
    if length >= 1000 and um_per_fullres_px:
        label = f"{length / 1000:g} mm"
    else:
        label = f"{length:g} {'µm' if um_per_fullres_px else 'px (full resolution)'}"
    bar = AnchoredSizeBar(ax.transData, length / unit_per_view, label, "lower left", pad=0.4, sep=3,
                          color="black", frameon=True, size_vertical=max(extent_view_px / 300, 0.5), fontproperties={
                              "size": 7})
    bar.patch.set_alpha(0.6)
    ax.add_artist(bar)


def display_labels(labels: Any) -> np.ndarray:
    """Labels as strings with missing ones (NaN, None, "", "nan") named :data:`UNLABELLED`."""
    from stmm_core.metrics import labelled_mask

    arr = np.asarray(labels, dtype=object)
    out = np.array([str(x) for x in arr], dtype=object)
    out[~labelled_mask(arr)] = UNLABELLED
    return out


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
                 title: str = "stmm domains", scores: dict[str, Any] | None = None,
                 caveat: str | None = None) -> None:
    """Spots coloured by domain over the H&E image; ground truth beside it when given. *caveat*: a second
    title line (e.g. the image branch ran on random weights or a coarse image)."""
    plt = _plt()
    bg, f = _background(section)
    xy = section.coords * f
    from stmm_core.domain_colors import domain_palette

    palette = domain_palette(labels, truth)  # the same colours go into result.h5ad and report.html
    panels, colour = palette.panels, palette.colour
    # the height follows the tissue's aspect (sections of a joint fit lie side by side: a wide, low layout)
    if bg is not None:
        aspect = bg.shape[0] / max(bg.shape[1], 1)
    else:
        aspect = float(np.ptp(xy[:, 1]) or 1.0) / float(np.ptp(xy[:, 0]) or 1.0)
    height = float(min(8.0, max(3.4, 5.2 * aspect + 0.8)))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), height), squeeze=False)
    diam = (section.spot_diameter or 0) * f
    size = max(2.0, min(60.0, (diam * 0.9) ** 2 * (72 / 100) ** 2)) if diam else 8.0
    um = microns_per_px(section)
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
        extent = bg.shape[1] if bg is not None else float(np.ptp(xy[:, 0]) or 1.0)
        add_scale_bar(ax, f, um, extent)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.5, frameon=False)
    sub = title
    if scores and "ari" in scores:
        sub += f"  ARI {scores['ari']:.3f}  NMI {scores['nmi']:.3f}"
    if caveat:  # wrapped to the figure's width (~11 characters per inch at this font size)
        import textwrap

        sub += "\n" + textwrap.fill(caveat, width=max(40, int(fig.get_figwidth() * 11)))
    fig.suptitle(sub, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(history: list[dict[str, float]], path: Path, weights: dict[str, float] | None = None) -> None:
    """The training loss as the sum of its weighted terms (stacked), the total on top, linear axes.

    *weights*: each term's weight in the loss (e.g. ``{"kl": 0.1}`` for a VGAE with ``kl_weight=0.1``); terms
    without one count with weight 1. The total drawn is the loss the optimiser saw, so the stack adds up to it."""
    plt = _plt()
    weights = weights or {}
    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        epochs = np.array([h["epoch"] for h in history], dtype=float)
        keys = [k for k in history[0] if k not in ("epoch", "loss")]
        keys += sorted({k for h in history for k in h} - set(keys) - {"epoch", "loss"})  # e.g. dec, later
        stack, labels = [], []
        for key in keys:
            w = float(weights.get(key, 1.0))
            vals = np.array([h.get(key, 0.0) for h in history], dtype=float) * w
            stack.append(np.nan_to_num(vals))
            labels.append(key if w == 1.0 else f"{w:g} × {key}")
        total = np.array([h.get("loss", np.nan) for h in history], dtype=float)
        if stack:
            ax.stackplot(epochs, *stack, labels=labels, alpha=0.55)
        ax.plot(epochs, total, color="black", lw=1.2, label="loss (total)")
        top = float(np.nanmax(total[len(total) // 20:])) * 1.15 if np.isfinite(total).any() else 1.0
        ax.set_ylim(0, top if top > 0 else 1.0)
        lo, hi = float(epochs.min()), float(epochs.max())
        ax.set_xlim(lo, hi) if hi > lo else ax.set_xlim(lo - 0.5, hi + 0.5)
        if not np.nan_to_num(total).any():  # e.g. the identity / propagate baselines: nothing is learnt
            ax.text(0.5, 0.5, "nothing trained: the loss is identically 0", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11, color="0.3")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted terms, stacked)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("training loss = sum of the weighted terms")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
