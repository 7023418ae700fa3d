"""Image features for every spot: tiles → image encoder, cached by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.interfaces import ImageEncoder
    from stmm_core.spec import TileSpec


def default_tile_size(section: "Section", tiles: "TileSpec") -> float:
    """Tile side in full-resolution px: explicit size, else spot diameter (or median spacing) × factor."""
    if tiles.size is not None:
        return float(tiles.size)
    base = section.spot_diameter
    if not base:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(section.coords).query(section.coords, k=2)
        base = float(np.median(dist[:, 1]))
    return float(base) * tiles.size_factor


def encode_section(
    section: "Section",
    encoder: "ImageEncoder",
    tiles: "TileSpec",
    *,
    device: str = "cpu",
    cache: Any | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return float32 ``(N, D_img)`` features and a dict describing how they were made.

    The cache key covers the image pixels, the spot coordinates, the tile geometry and the encoder's
    weights identity, so a second fit on the same section reuses the features.
    """
    import hashlib

    import torch

    from stmm_core.data.tiles import auto_out_px, iter_tiles
    from stmm_core.progress import progress_bar

    tile_px = default_tile_size(section, tiles)
    requested = getattr(encoder.params, "input_size", "auto")
    max_px = int(encoder.preprocessing.input_size)
    out_px = auto_out_px(section, tile_px, max_px) if requested == "auto" else int(requested)
    info: dict[str, Any] = {
        "tile_fullres_px": tile_px,
        "tile_image_px": tile_px * float(section.image_scale or 1.0),
        "input_px": out_px,
        "encoder": encoder.identity(),
        "cached": False,
    }
    key = None
    if cache is not None:
        coords_hash = hashlib.sha256(np.ascontiguousarray(section.coords, dtype=np.float64).tobytes()).hexdigest()
        key = cache.key(
            "image-features-v1",
            section.image.content_hash(),
            coords_hash,
            float(section.image_scale),
            tile_px,
            out_px,
            tiles.pad_value,
            encoder.identity(),
        )
        hit = cache.get(key, mmap=True)
        if hit is not None and hit.shape[0] == section.n_spots:
            info["cached"] = True
            return hit.astype(np.float32, copy=False), info
    from stmm_core.data.tile_loader import tile_batches
    from stmm_core.distributed import context as dist_ctx

    encoder.to(device)
    batch = int(getattr(encoder.params, "batch_size", 64))
    n, dim = section.n_spots, int(encoder.out_dim)
    lo, hi = dist_ctx.shard(n)  # data parallel under torchrun: this process encodes rows [lo, hi)
    info["processes"] = dist_ctx.world_size()
    commit = None
    if cache is not None and key is not None and not dist_ctx.is_distributed():
        feats, commit = cache.create(key, (n, dim))  # memory-mapped: millions of rows never sit in RAM
    else:
        feats = np.empty((hi - lo, dim), dtype=np.float32)
    try:
        with progress_bar(total=hi - lo, desc="image features", unit="tile", enabled=progress) as bar:
            for start, chunk in tile_batches(section, tile_px, out_px, batch_size=batch, pad_value=tiles.pad_value,
                                             lo=lo, hi=hi):
                x = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
                out = _encode(encoder, x)
                if not np.isfinite(out).all():
                    from stmm_core.errors import StmmError

                    raise StmmError("the image encoder produced NaN/inf features; check the image and the encoder "
                                    "weights")
                feats[start : start + len(out)] = out
                bar.update(len(out))
    except BaseException:
        if commit is not None:
            Path(feats.filename).unlink(missing_ok=True)
        raise
    if commit is not None:
        commit()
        return cache.get(key, mmap=True), info
    feats = dist_ctx.gather_rows(feats, n)
    if cache is not None and key is not None and dist_ctx.rank() == 0:
        cache.put(key, feats)
    return feats, info


def _encode(encoder: "ImageEncoder", x: Any) -> np.ndarray:
    """One batch of features. Bit-for-bit reproduction of a fit needs only the same thread count (pinned by
    :func:`stmm_core.seeding.configure_threads`, re-applied by ``seed_everything``): oneDNN convolutions are
    deterministic for a given count. ``STMM_EXACT_CONV=1`` additionally runs CPU convolutions without oneDNN
    (2-4x slower for CNNs); it is not needed for reproduction and kept for comparing the two kernels."""
    import os

    import torch

    if os.environ.get("STMM_EXACT_CONV", "").strip().lower() in ("1", "true", "yes", "on"):
        with torch.backends.mkldnn.flags(enabled=False):
            return encoder.encode(x).float().cpu().numpy()
    return encoder.encode(x).float().cpu().numpy()


def standardise(x: np.ndarray) -> np.ndarray:
    """Per-feature z-score (constant features become 0), float32."""
    mean = x.mean(0, keepdims=True)
    std = x.std(0, keepdims=True)
    std[std < 1e-8] = 1.0
    return ((x - mean) / std).astype(np.float32)


def reduce_image_features(x: np.ndarray, n_components: int | None, seed: int) -> np.ndarray:
    """z-score per dimension, then (optionally) PCA scores, float32 ``(N, min(k, N, D))``."""
    z = standardise(x)
    if n_components is None or n_components >= min(z.shape):
        return z
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed).fit_transform(z).astype(np.float32)
