"""One palette for the domains of a run, shared by domains.png, result.h5ad (``uns["<key>_colors"]``) and
report.html, so a domain has the same colour and name in stmm's figures and in every scverse plot.

With ground truth, predicted clusters are renamed after the truth label they overlap most
(:func:`stmm_core.plots.match_to_truth`); the truth's names get colours first, then extra clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def natural_order(names: Any) -> list[str]:
    """Names sorted short-first then alphabetically ("2" before "10", "L2" before "L10")."""
    return sorted({str(n) for n in names}, key=lambda s: (len(s), s))


@dataclass
class DomainPalette:
    """Colours of a run's domains.

    Attributes:
        panels: ``(title, per-spot names)`` as domains.png draws them (truth first when given).
        colour: name → hex colour (``#rrggbb``), one per name across panels.
        mapping: predicted cluster id → the name domains.png shows for it (itself without truth).
        matched: per-spot matched names, or None without truth.
    """

    panels: list[tuple[str, np.ndarray]]
    colour: dict[str, str]
    mapping: dict[str, str] = field(default_factory=dict)
    matched: np.ndarray | None = None

    def colours_for(self, categories: Any) -> list[str]:
        """Hex colours for *categories* in their order (``uns["<key>_colors"]`` for a categorical column)."""
        return [self.colour[str(c)] for c in categories]

    def cluster_colours(self, categories: Any) -> list[str]:
        """Hex colours for predicted cluster ids (each gets the colour of the name it is shown under)."""
        return [self.colour[self.mapping.get(str(c), str(c))] for c in categories]


def domain_palette(labels: Any, truth: Any | None = None) -> DomainPalette:
    """The palette of domains.png for predicted *labels* ``(N,)`` and optional *truth* ``(N,)``."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from stmm_core.plots import match_to_truth

    pred = np.asarray(labels).astype(str)
    panels: list[tuple[str, np.ndarray]] = [("predicted domains", pred)]
    matched = None
    missing: list[str] = []
    if truth is not None:
        from stmm_core.metrics import labelled_mask
        from stmm_core.plots import display_labels

        raw = np.asarray(truth, dtype=object)
        missing = sorted({str(x) for x in raw[~labelled_mask(raw)]})  # NaN, "", "NA": drawn as "unlabelled"
        truth = raw.astype(str)
        matched = np.asarray(match_to_truth(pred, truth)).astype(str)
        panels = [("ground truth", np.asarray(display_labels(raw)).astype(str)),
                  ("predicted domains (named after the best-matching layer)", matched)]
    cmap = colormaps["tab20"]
    order: list[str] = []  # one colour per name across panels: the truth's names first, then extra clusters
    for _, lab in panels:
        order += [c for c in natural_order(lab) if c not in order]
    from stmm_core.plots import UNLABELLED

    colour = {c: to_hex(cmap(i % 20)) for i, c in enumerate(o for o in order if o != UNLABELLED)}
    for name in [UNLABELLED, *missing]:  # unlabelled spots in grey, under any of their raw names
        colour[name] = "#cccccc"
    mapping = {c: c for c in natural_order(pred)}
    if matched is not None:
        for c in mapping:
            mapping[c] = str(matched[np.flatnonzero(pred == c)[0]])
    return DomainPalette(panels, colour, mapping, matched)
