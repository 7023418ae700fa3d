"""Per-section arrays for Magic: cached uint8 tiles, gene tokens, log1p targets; tile augmentation.

Tiles are cut once per (image content, coordinates, scale, tile size, output size) and stored in the stmm
feature cache as uint8 ``(N, 3, S, S)`` arrays, so folds and stages never decode a 90-megapixel JPEG again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.cache import FeatureCache
    from stmm_core.data.section import Section


@dataclass
class SectionArrays:
    """One section ready for training/evaluation; rows aligned with ``obs_names``.

    Attributes:
        name: section name.
        obs_names: spot ids ``(N,)``.
        coords: full-res px ``(N, 2)``.
        tiles: uint8 ``(N, 3, S, S)``.
        tokens: int64 ``(N, L)`` gene tokens (None when not needed).
        targets: float32 ``(N, G)`` log1p-normalised target expression (None when not needed).
    """

    name: str
    obs_names: np.ndarray
    coords: np.ndarray
    tiles: np.ndarray
    tokens: np.ndarray | None = None
    targets: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.tiles.shape[0])


def tile_size_fullres(section: "Section", size: float | None, size_factor: float) -> float:
    """Tile side in full-res px: ``size`` if given, else the spot diameter (or, unknown, the median spot
    spacing, see :func:`stmm_core.data.tiles.default_tile_fullres_px`) times ``size_factor``."""
    from stmm_core.data.tiles import default_tile_fullres_px

    if size is not None:
        return float(size)
    return float(default_tile_fullres_px(section)) * float(size_factor)


def section_tiles(section: "Section", tile_fullres_px: float, out_px: int, pad_value: int = 255,
                  cache: "FeatureCache | None" = None) -> np.ndarray:
    """uint8 ``(N, 3, out_px, out_px)`` spot-centred tiles, from the cache when possible."""
    from stmm_core.data.cache import FeatureCache, coords_hash
    from stmm_core.data.tiles import extract_tiles

    if section.image is None or section.image_scale is None:
        raise DataError(
            f"section {section.name!r} has no H&E image (or no scale factor); Magic learns from image tiles: "
            "pass an .h5ad with its image, or --image with --scale"
        )

    def compute() -> np.ndarray:
        return extract_tiles(section, tile_fullres_px, out_px, pad_value=pad_value)

    if cache is None:
        return compute()
    key = FeatureCache.key("magic-tiles-v1", section.image.content_hash(), coords_hash(section.coords),
                           float(section.image_scale), float(tile_fullres_px), int(out_px), int(pad_value))
    return cache.get_or_compute(key, compute).astype(np.uint8, copy=False)


def train_val_split(sizes: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Global row indices (over concatenated sections) for training and validation, random per seed."""
    n = int(sum(sizes))
    rng = np.random.default_rng(seed + 17)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    if n_val >= n:
        n_val = n - 1
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def dihedral(tiles: torch.Tensor, k: int) -> torch.Tensor:
    """Element *k* in ``0..7`` of the dihedral group on ``(…, S, S)``: ``k ≥ 4`` flips left–right, then
    ``k % 4`` quarter turns."""
    t = tiles.flip(-1) if k >= 4 else tiles
    return torch.rot90(t, k % 4, dims=(-2, -1))


def draw_augment(b: int, mode: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random choices of :func:`augment_tiles` for *b* tiles: ``ops`` ``(b,)`` dihedral elements and, with
    ``flips+color``, ``bright``/``contrast`` factors ``(b, 1, 1, 1)``. Drawn in a fixed order from *generator*,
    so processes sharing a generator draw the same values for a whole batch and each applies its own rows."""
    if mode == "none":
        return {}
    out = {"ops": torch.randint(0, 8, (b,), generator=generator)}
    if mode == "flips+color":
        out["bright"] = 1.0 + 0.1 * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
        out["contrast"] = 1.0 + 0.1 * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    return out


def apply_augment(tiles: torch.Tensor, mode: str, draw: dict[str, torch.Tensor],
                  rows: slice = slice(None)) -> torch.Tensor:
    """Apply rows *rows* of *draw* (:func:`draw_augment`) to ``tiles`` uint8 ``(B, 3, S, S)``."""
    if mode == "none":
        return tiles
    b = tiles.shape[0]
    ops = draw["ops"][rows]
    out = torch.empty_like(tiles)
    for i in range(b):
        out[i] = dihedral(tiles[i], int(ops[i]))
    if mode == "flips+color":
        x = out.float()
        bright, contrast = draw["bright"][rows], draw["contrast"][rows]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
        out = x.round().clamp(0, 255).to(torch.uint8)
    return out


def augment_tiles(tiles: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random dihedral transform per tile (8 flips/rotations), plus mild brightness/contrast jitter.

    ``tiles`` uint8 ``(B, 3, S, S)`` → uint8 ``(B, 3, S, S)``. No inversion/solarisation/posterisation (those
    destroy H&E stain semantics) and no tiny random crops.
    """
    return apply_augment(tiles, mode, draw_augment(tiles.shape[0], mode, generator))
