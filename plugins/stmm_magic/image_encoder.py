"""A fine-tunable timm ViT that returns its pooled feature and its token sequence.

Built through :class:`stmm_vision.encoders.TimmImageEncoder` (public API), which resolves the architecture,
the published weights (Hugging Face Hub, safetensors, sha256; :class:`~stmm_core.errors.WeightsUnavailable`
when offline) and the normalisation statistics; this module then takes its timm model and makes it trainable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stmm_core.errors import DataError, SpecError
from stmm_core.interfaces import ImageEncoder
from stmm_magic.params import MagicViTParams


class MagicViT(nn.Module, ImageEncoder):
    """uint8 tiles ``(B, 3, H, W)`` → ``{"pooled": (B, D), "tokens": (B, 1 + T, D), "patch_tokens": (B, T, D)}``.

    ``tokens`` holds the prefix (class) token(s) followed by the T patch tokens after the final norm;
    ``pooled`` is the class token (``pool="token"``) or the mean of the patch tokens (``pool="avg"``).
    Tiles of another size are resized (bilinear, antialiased) to ``img_size``.
    """

    shapes = {"tiles": "(B, 3, H, W) uint8", "pooled": "(B, D_img)", "tokens": "(B, 1 + T, D_img)"}

    def __init__(self, params: MagicViTParams) -> None:
        nn.Module.__init__(self)
        ImageEncoder.__init__(self, params)
        from stmm_vision.encoders import TimmImageEncoder
        from stmm_vision.params import ViTParams

        vit = TimmImageEncoder(ViTParams(model=params.model, weights=params.weights, sha256=params.sha256,
                                         input_size=params.img_size, pool=params.pool, channels_last=False))
        model = vit.model
        if not hasattr(model, "forward_features"):
            raise SpecError(f"image.model={params.model!r} has no forward_features (a timm ViT is needed)")
        self.model = model
        self.model.requires_grad_(params.trainable)
        self.model.train()
        self.out_dim = int(model.num_features)
        self.token_dim = self.out_dim
        self.preprocessing = vit.preprocessing
        self.weights_info = dict(vit.weights_info)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.img_size = int(params.img_size)
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self._vit_identity = vit.identity()

    def prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → normalised float32 ``(B, 3, img_size, img_size)``."""
        if tiles.ndim != 4 or tiles.shape[1] != 3:
            raise DataError(f"image tiles must be (B, 3, H, W) uint8 RGB, got shape {tuple(tiles.shape)}")
        x = tiles.float().div(255.0) if tiles.dtype == torch.uint8 else tiles.float()
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = nn.functional.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear",
                                          align_corners=False, antialias=self.img_size < max(x.shape[-2:]))
        return (x - self.mean) / self.std

    def forward(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 tiles → pooled ``(B, D)``, tokens ``(B, 1 + T, D)``, patch_tokens ``(B, T, D)``."""
        tokens = self.model.forward_features(self.prepare(tiles))
        if tokens.ndim != 3:
            raise SpecError(f"image.model={self.params.model!r} does not return a token sequence (a ViT is needed)")
        patches = tokens[:, self.num_prefix_tokens:]
        if self.params.pool == "token" and self.num_prefix_tokens > 0:
            pooled = tokens[:, 0]
        else:
            pooled = patches.mean(1)
        return {"pooled": pooled, "tokens": tokens, "patch_tokens": patches}

    @torch.no_grad()
    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 pooled ``(B, out_dim)`` (eval mode, batches of 64)."""
        was = self.training
        self.eval()
        tiles = torch.as_tensor(tiles)
        out = [self(tiles[i:i + 64])["pooled"] for i in range(0, tiles.shape[0], 64)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.out_dim)

    def identity(self) -> str:
        """Changes with the weights: digest of the current parameters plus the construction identity."""
        import hashlib

        h = hashlib.sha256(self._vit_identity.encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
        return f"magic-vit/{self.params.model}@{self.img_size};params-sha256={h.hexdigest()[:32]}"
