"""A small CNN image encoder written against :class:`stmm_core.interfaces.ImageEncoder`.

The contract (what stmm relies on):

* ``encode(tiles)``: ``tiles`` uint8 ``(B, 3, H, W)``, RGB, already resized by stmm to
  ``preprocessing.input_size`` (H = W); return float32 ``(B, out_dim)``. The encoder normalises with its own
  ``preprocessing.mean/std`` (stmm does not).
* ``out_dim`` and ``preprocessing`` are set in ``__init__`` (stmm reads them before the first batch).
* Device: stmm calls ``encoder.to(device)`` once, then passes CPU tiles; move them to the module's device
  inside ``encode`` and return features on that device (stmm copies them back).
* Weights: ``random`` must be reproducible — stmm seeds torch right before building the encoder, so plain
  ``nn.Module`` initialisation is enough; loaded weights go through safetensors with a strict load, and a
  missing file is an error (never a silent fallback to random weights).
* ``identity()`` changes whenever the features would change (weights, settings): it keys the feature cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from stmm_core.errors import StmmError, WeightsUnavailable
from stmm_core.interfaces import ImageEncoder, ImagePreprocessing


class TinyCNNEncoder(nn.Module, ImageEncoder):
    """uint8 tiles ``(B, 3, S, S)`` → float32 ``(B, width)``: three strided conv layers, global average pool."""

    def __init__(self, params) -> None:  # noqa: ANN001 - TinyCNNParams, imported lazily by stmm
        nn.Module.__init__(self)
        ImageEncoder.__init__(self, params)
        p = self.params
        w = int(p.width)
        self.net = nn.Sequential(
            nn.Conv2d(3, w // 4, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w // 4, w // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = w
        self.preprocessing = ImagePreprocessing(input_size=int(p.input_size), mean=(0.485, 0.456, 0.406),
                                                std=(0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self._weights_id = self._load(p.weights)
        self.eval()

    def _load(self, weights: str) -> str:
        if weights == "random":
            digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in self.state_dict().values()))
            return f"random:{digest.hexdigest()[:16]}"  # the actual random weights: a new seed is a new identity
        if weights == "pretrained":
            raise WeightsUnavailable("tiny-cnn has no published weights: pass --set image.weights=random or "
                                     "--set image.weights=/path/weights.safetensors")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"tiny-cnn weights {path} not found")
        from safetensors.torch import load_file

        try:
            self.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as exc:
            raise StmmError(f"tiny-cnn weights {path} do not fit width={self.params.width}: {exc}") from None
        return f"file:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"

    @torch.inference_mode()
    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` → float32 ``(B, out_dim)`` on the module's device."""
        tiles = torch.as_tensor(tiles)
        if tiles.ndim != 4 or tiles.shape[1] != 3 or tiles.dtype != torch.uint8:
            raise StmmError(f"tiles must be uint8 (B, 3, H, W), got {tuple(tiles.shape)} {tiles.dtype}")
        dev = self.mean.device
        x = (tiles.to(dev).float() / 255.0 - self.mean) / self.std
        return self.net(x).float()

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.encode(tiles)

    def identity(self) -> str:
        p = self.params
        return f"tiny-cnn;v1;width={p.width};size={p.input_size};weights={self._weights_id}"
