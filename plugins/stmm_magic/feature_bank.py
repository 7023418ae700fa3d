"""A CPU image encoder for Magic: a frozen, weight-free feature bank followed by a trainable MLP projection.

Without pretrained weights (none can be downloaded on many machines) a ViT trained from random initialisation on
a few hundred spots learns little in Magic's contrastive stage. This encoder keeps what such a ViT cannot learn
fixed and trains only what stage 1 can:

* **Bank (frozen, no weights).** The ``stain-stats`` colour statistics of :mod:`stmm_vision.stain` (colour
  deconvolution into haematoxylin / eosin / residual plus total optical density; mean, sd, 10/50/90 % quantiles
  and the tissue fraction) on several centred crops of the tile (``scales``), and optionally texture statistics
  (mean and sd of the gradient magnitude of each channel per crop). With ``tiles.size_factor = 2`` the whole tile
  is twice the spot's diameter, so scale 1.0 is the spot's neighbourhood, 0.5 the spot itself, 0.25 its centre.
  The bank is z-scored with statistics fitted once on the training tiles (:meth:`fit_inputs`, called by the
  pipeline before stage 1 and by the feature baselines that read this encoder); they are buffers saved with the
  run, never trained.
* **Projection (trained by stage 1).** ``Linear → GELU → Dropout → LayerNorm`` blocks to ``out_dim``: the pooled
  feature the contrastive heads read, and a single image token for the fusion module and the stage-2 decoder.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from stmm_core.errors import DataError
from stmm_core.interfaces import ImageEncoder, ImagePreprocessing
from stmm_magic.params import StainBankMLPParams

#: Channels the texture statistics are computed on (indices into stain-stats' H, E, residual, OD stack).
TEXTURE_CHANNELS = ("haematoxylin", "eosin", "od")


class StainBankMLP(nn.Module, ImageEncoder):
    """uint8 tiles ``(B, 3, H, W)`` → ``{"pooled": (B, D), "tokens": (B, 1, D), "patch_tokens": (B, 1, D)}``."""

    shapes = {"tiles": "(B, 3, H, W) uint8", "pooled": "(B, D_img)", "tokens": "(B, 1, D_img)"}

    def __init__(self, params: StainBankMLPParams | None = None) -> None:
        nn.Module.__init__(self)
        ImageEncoder.__init__(self, params or StainBankMLPParams())
        from stmm_vision.params import StainStatsParams
        from stmm_vision.stain import StainStatsEncoder

        p = self.params
        self.img_size = int(p.img_size)
        self.stain = StainStatsEncoder(StainStatsParams(scales=list(p.scales), tissue_od=p.tissue_od,
                                                        input_size=self.img_size))
        self.stain.requires_grad_(False)
        self.scales = self.stain.scales
        self.bank_dim = self.stain.out_dim + (len(self.scales) * len(TEXTURE_CHANNELS) * 2 if p.texture else 0)
        self.register_buffer("bank_mean", torch.zeros(self.bank_dim))
        self.register_buffer("bank_std", torch.ones(self.bank_dim))
        self.register_buffer("bank_fitted", torch.zeros((), dtype=torch.long))
        layers: list[nn.Module] = []
        width = self.bank_dim
        for h in list(p.hidden):
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(p.dropout), nn.LayerNorm(h)]
            width = h
        layers.append(nn.Linear(width, p.out_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.requires_grad_(p.trainable)
        self.out_dim = int(p.out_dim)
        self.token_dim = self.out_dim
        self.preprocessing = ImagePreprocessing(input_size=self.img_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.weights_info = {"source": "weight-free feature bank + MLP (random init, trained by stage 1)"}

    # -- the frozen bank ------------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Names of the ``bank_dim`` bank features, in order."""
        names = self.stain.feature_names()
        if self.params.texture:
            names += [f"s{s:.2f}:{c}:grad_{st}" for s in self.scales for c in TEXTURE_CHANNELS
                      for st in ("mean", "std")]
        return names

    def prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` at any side → uint8 ``(B, 3, img_size, img_size)`` (bilinear, antialiased)."""
        if tiles.ndim != 4 or tiles.shape[1] != 3:
            raise DataError(f"image tiles must be (B, 3, H, W) uint8 RGB, got shape {tuple(tiles.shape)}")
        if tiles.dtype != torch.uint8:
            tiles = (tiles.float() * (255.0 if tiles.is_floating_point() and tiles.max() <= 1.0 else 1.0))
            tiles = tiles.round().clamp(0, 255).to(torch.uint8)
        if tiles.shape[-2:] != (self.img_size, self.img_size):
            x = nn.functional.interpolate(tiles.float(), size=(self.img_size, self.img_size), mode="bilinear",
                                          align_corners=False, antialias=self.img_size < max(tiles.shape[-2:]))
            tiles = x.round().clamp(0, 255).to(torch.uint8)
        return tiles

    @torch.no_grad()
    def bank_raw(self, tiles: torch.Tensor) -> torch.Tensor:
        """Raw (not z-scored) bank features ``(B, bank_dim)`` float32."""
        tiles = self.prepare(torch.as_tensor(tiles))
        dev = self.bank_mean.device
        feats = [self.stain.encode(tiles.to(dev))]
        if self.params.texture and tiles.shape[0]:
            feats.append(self._texture(tiles.to(dev)))
        return torch.cat(feats, 1).float()

    def _texture(self, tiles: torch.Tensor) -> torch.Tensor:
        od = -torch.log((tiles.float() + 1.0) / 256.0)
        hed = torch.einsum("bchw,cd->bdhw", od, self.stain.hed_from_rgb)
        chans = torch.stack([hed[:, 0], hed[:, 1], od.sum(1)], 1)  # (B, 3, H, W)
        gy = chans[:, :, 1:, :-1] - chans[:, :, :-1, :-1]
        gx = chans[:, :, :-1, 1:] - chans[:, :, :-1, :-1]
        grad = torch.sqrt(gx * gx + gy * gy + 1e-12)
        b, c, h, w = grad.shape
        out = []
        for s in self.scales:
            ch, cw = max(1, round(h * s)), max(1, round(w * s))
            top, left = (h - ch) // 2, (w - cw) // 2
            g = grad[:, :, top:top + ch, left:left + cw].reshape(b, c, -1)
            out.append(torch.stack([g.mean(2), g.std(2, unbiased=False)], 2).reshape(b, -1))
        return torch.cat(out, 1)

    @torch.no_grad()
    def fit_inputs(self, tiles: torch.Tensor | np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Fit the bank's z-score statistics on training *tiles* (no gradient; never touches the MLP)."""
        t = torch.as_tensor(tiles)
        if t.shape[0] < 2:
            raise DataError("the feature bank's statistics need at least 2 training spots")
        f = torch.cat([self.bank_raw(t[i:i + batch_size]) for i in range(0, t.shape[0], batch_size)])
        self.bank_mean.copy_(f.mean(0))
        self.bank_std.copy_(f.std(0, unbiased=False).clamp_min(1e-6))
        self.bank_fitted.fill_(1)
        return {"n_tiles": int(t.shape[0]), "bank_dim": int(self.bank_dim)}

    def bank(self, tiles: torch.Tensor) -> torch.Tensor:
        """z-scored bank features ``(B, bank_dim)`` (clipped to ±10 sd, so a odd tile cannot dominate)."""
        return ((self.bank_raw(tiles) - self.bank_mean) / self.bank_std).clamp(-10.0, 10.0)

    # -- the trained projection -----------------------------------------------------------------------
    def forward(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.mlp(self.bank(tiles))
        tok = pooled.unsqueeze(1)
        return {"pooled": pooled, "tokens": tok, "patch_tokens": tok}

    @torch.no_grad()
    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 pooled ``(B, out_dim)`` (eval mode, batches of 256)."""
        was = self.training
        self.eval()
        tiles = torch.as_tensor(tiles)
        out = [self(tiles[i:i + 256])["pooled"] for i in range(0, tiles.shape[0], 256)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.out_dim)

    def identity(self) -> str:
        """Changes with the bank settings, its fitted statistics and the MLP weights."""
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
        return f"stain-bank-mlp/{self.stain.identity()};texture={self.params.texture};params-sha256={h.hexdigest()[:32]}"
