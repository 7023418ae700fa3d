"""Stain statistics: a weight-free H&E tile encoder (colour deconvolution + per-channel statistics).

For low-resolution images (a Visium spot is ~4 px in a ``lowres`` PNG) and for machines where no pretrained
weights can be obtained, a randomly initialised CNN gives features of unknown meaning. This encoder gives
interpretable ones instead: each tile is converted to optical density, ``OD = -ln((I + 1) / 256)``, and
unmixed into haematoxylin, eosin and residual concentrations with the Ruifrok & Johnston (2001) stain matrix
(the matrix scikit-image's ``rgb2hed`` uses; written out here because it is one 3×3 constant and scikit-image
would be a heavy dependency for it). For every centred crop in ``scales`` (fractions of the tile side) it
reports, per channel (H, E, residual, total OD), the mean, standard deviation and the 10/50/90 % quantiles,
plus the fraction of tissue pixels (total OD above ``tissue_od``): ``len(scales) · 21`` features.

No weights, deterministic, cheap (the pipeline's z-score + PCA follows as for every encoder).
"""

from __future__ import annotations

import torch
from torch import nn

from stmm_core.interfaces import ImageEncoder, ImagePreprocessing
from stmm_vision.params import StainStatsParams
from stmm_vision.tile_input import check_tiles

#: Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB/residual) in optical-density RGB.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
CHANNELS = ("haematoxylin", "eosin", "residual", "od")
STATS = ("mean", "std", "q10", "q50", "q90")
_QUANTILES = (0.1, 0.5, 0.9)


class StainStatsEncoder(nn.Module, ImageEncoder):
    """uint8 tiles ``(B, 3, H, W)`` → float32 ``(B, len(scales) · 21)`` stain statistics (see module docstring)."""

    def __init__(self, params: StainStatsParams | None = None) -> None:
        nn.Module.__init__(self)
        ImageEncoder.__init__(self, params or StainStatsParams())
        p = self.params
        self.scales = tuple(sorted(set(float(s) for s in p.scales), reverse=True))
        self.out_dim = len(self.scales) * (len(CHANNELS) * len(STATS) + 1)
        size = 64 if p.input_size == "auto" else int(p.input_size)
        self.preprocessing = ImagePreprocessing(input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        hed_from_rgb = torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float64)).float()
        self.register_buffer("hed_from_rgb", hed_from_rgb, persistent=False)
        self.register_buffer("quantiles", torch.tensor(_QUANTILES), persistent=False)

    def feature_names(self) -> list[str]:
        """Names of the ``out_dim`` features, in order (``s1.00:haematoxylin:mean``, …)."""
        names = []
        for s in self.scales:
            names += [f"s{s:.2f}:{c}:{st}" for c in CHANNELS for st in STATS] + [f"s{s:.2f}:tissue_fraction"]
        return names

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 ``(B, out_dim)`` on the buffer's device."""
        tiles = check_tiles(tiles)
        dev = self.hed_from_rgb.device
        b, _, h, w = tiles.shape
        if b == 0:
            return torch.empty(0, self.out_dim, dtype=torch.float32, device=dev)
        od = -torch.log((tiles.to(dev).float() + 1.0) / 256.0)  # (B, 3, H, W), 0 for white
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb)  # (B, 3, H, W) stain concentrations
        chans = torch.cat([hed, od.sum(1, keepdim=True)], 1)  # (B, 4, H, W)
        feats = []
        for s in self.scales:
            ch, cw = max(1, round(h * s)), max(1, round(w * s))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = chans[:, :, top : top + ch, left : left + cw].reshape(b, len(CHANNELS), -1)
            q = torch.quantile(x, self.quantiles, dim=2)  # (3, B, 4)
            stats = torch.stack([x.mean(2), x.std(2, unbiased=False), q[0], q[1], q[2]], 2)  # (B, 4, 5)
            tissue = (x[:, 3] > self.params.tissue_od).float().mean(1, keepdim=True)
            feats += [stats.reshape(b, -1), tissue]
        return torch.cat(feats, 1)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.encode(tiles)

    def identity(self) -> str:
        """Changes with anything that changes the features (no weights: the method and its settings)."""
        p = self.params
        return (f"stain-stats;v1;matrix=ruifrok2001;scales={','.join(f'{s:g}' for s in self.scales)};"
                f"tissue_od={p.tissue_od:g};size={self.preprocessing.input_size}")
