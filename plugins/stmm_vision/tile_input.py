"""The tile batch every image encoder takes: uint8 RGB ``(B, 3, H, W)``."""

from __future__ import annotations

from typing import Any

import torch

from stmm_core.errors import DataError


def check_tiles(tiles: Any) -> torch.Tensor:
    """``tiles`` as a uint8 tensor ``(B, 3, H, W)``, or a :class:`DataError` saying what is wrong."""
    if not isinstance(tiles, torch.Tensor):
        tiles = torch.as_tensor(tiles)
    if tiles.ndim != 4 or tiles.shape[1] != 3:
        raise DataError(f"image tiles must be (B, 3, H, W) uint8 RGB, got shape {tuple(tiles.shape)}")
    if tiles.dtype != torch.uint8:
        raise DataError(f"image tiles must be uint8 (0-255), got {tiles.dtype}")
    return tiles
