"""Batches of spot tiles through a ``torch.utils.data.DataLoader`` with worker processes.

Each item of :class:`TileBatches` is one batch of consecutive spots ``[start, stop)``, read lazily from the
section's :class:`~stmm_core.data.image.ImageSource` (a tiled TIFF is read through its zarr store: only the
chunks a tile touches are decoded, never the whole slide). With ``workers > 0`` the batches are decoded in
worker processes while the main process runs the encoder; the loader keeps batch order, so features come out in
``obs`` order. Every worker re-opens the image (file handles are never shared across processes).
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from stmm_core.data.tiles import read_tiles, tile_boxes

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


def _fresh(image: Any) -> Any:
    """A copy of an image source with any open file/zarr handle dropped (re-opened lazily on first read)."""
    img = copy.copy(image)
    if hasattr(img, "_store"):
        img._store = None
    return img


class TileBatches:
    """Map-style dataset: item ``b`` = ``(start, uint8 (B, 3, out_px, out_px))`` for rows ``rows[b·B:(b+1)·B]``."""

    def __init__(self, section: "Section", tile_fullres_px: float, out_px: int, batch_size: int,
                 pad_value: int = 255, lo: int = 0, hi: int | None = None) -> None:
        from stmm_core.data.tiles import _require_image

        scale = _require_image(section)
        hi = section.n_spots if hi is None else hi
        self.x0y0, self.x1y1, self.box_lo, self.side = tile_boxes(section.coords[lo:hi], scale, tile_fullres_px)
        self.image = section.image
        self.out_px, self.pad_value = int(out_px), int(pad_value)
        self.batch_size = max(int(batch_size), 1)
        self.n = hi - lo
        self._pid = os.getpid()

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __getitem__(self, b: int) -> tuple[int, np.ndarray]:
        if os.getpid() != self._pid:  # first use in a worker process: own handle
            self.image, self._pid = _fresh(self.image), os.getpid()
        sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, self.n))
        return sl.start, read_tiles(self.image, self.x0y0[sl], self.x1y1[sl], self.box_lo[sl], self.side,
                                    self.out_px, self.pad_value)


def default_workers(n_tiles: int) -> int:
    """Worker processes for tile decoding: ``STMM_TILE_WORKERS`` if set, else 0 under 20,000 tiles (start-up
    costs more than it saves) and 2 above."""
    from stmm_core.env import env_int

    env = env_int("STMM_TILE_WORKERS", minimum=0)
    if env is not None:
        return env
    return 0 if n_tiles < 20_000 else min(2, os.cpu_count() or 1)


def tile_batches(section: "Section", tile_fullres_px: float, out_px: int, batch_size: int = 64,
                 pad_value: int = 255, workers: int | None = None, lo: int = 0,
                 hi: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(offset, uint8 batch)`` in row order for rows ``[lo, hi)`` (offset relative to ``lo``)."""
    ds = TileBatches(section, tile_fullres_px, out_px, batch_size, pad_value, lo, hi)
    workers = default_workers(ds.n) if workers is None else int(workers)
    if workers <= 0 or len(ds) <= 1:
        for b in range(len(ds)):
            yield ds[b]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, prefetch_factor=4,
                        persistent_workers=False, collate_fn=lambda x: x)
    for start, arr in loader:
        yield int(start), np.asarray(arr)
