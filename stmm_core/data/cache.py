"""A content-addressed feature cache: a second fit on the same section does not re-encode its tiles.

Keys are sha256 digests of the canonical JSON of their parts (image content hash, coordinates hash, tile
parameters, encoder identity…), so any change of pixels, positions, geometry or weights gives a new key.
Values are ``.npy`` files written atomically (temporary file + ``os.replace``): concurrent writers and
interrupted runs never leave a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_cache_root() -> Path:
    """``$STMM_CACHE_DIR`` if set, else ``~/.cache/stmm``."""
    from stmm_core.env import env_dir

    env = env_dir("STMM_CACHE_DIR", fallback="pass --no-cache")
    return env if env is not None else Path.home() / ".cache" / "stmm"


def _canonical(obj: Any) -> Any:
    """JSON-ready form: numbers as floats (so 96 and 96.0 agree), tuples as lists, paths/bytes as text."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float, np.integer, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else repr(f)
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"ndarray_sha256": array_hash(obj)}
    if isinstance(obj, bytes):
        return {"bytes_sha256": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot use {type(obj).__name__} in a cache key; pass str, number, list, dict or ndarray")


def array_hash(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}:{a.shape}:".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def coords_hash(coords: np.ndarray) -> str:
    """Hash of spot coordinates as little-endian float64 (the same positions always give the same hash)."""
    return array_hash(np.asarray(coords, dtype="<f8"))


class FeatureCache:
    """Arrays stored under ``<root>/features/<key[:2]>/<key>.npy``.

    ``root`` defaults to :func:`default_cache_root`; the folder is created on the first ``put``.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    @staticmethod
    def key(*parts: Any) -> str:
        """sha256 hex over the canonical JSON of *parts* (order matters; dict key order does not)."""
        text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        """File of *key* (a 64-hex-digit key from :meth:`key`)."""
        if not _KEY.match(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / "features" / key[:2] / f"{key}.npy"

    def _make_dir(self, folder: Path) -> None:
        """Create a cache folder; a place that cannot hold one is a one-line error naming the fix."""
        from stmm_core.errors import StmmError

        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StmmError(f"the feature cache cannot be created in {self.root} ({exc.strerror or exc}); set "
                            "STMM_CACHE_DIR to a writable folder, or pass --no-cache") from None

    def ensure(self) -> "FeatureCache":
        """Check (before any work) that the cache folder can be created and written; returns self."""
        from stmm_core.atomic import probe_writable

        self._make_dir(self.root)
        probe_writable(self.root, f"feature cache {self.root} (set STMM_CACHE_DIR, or pass --no-cache)")
        return self

    def get(self, key: str, mmap: bool = False) -> np.ndarray | None:
        """The stored array (memory-mapped read-only with ``mmap``), or None when absent or unreadable (a
        corrupt entry is removed)."""
        p = self.path(key)
        try:
            return np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            p.unlink(missing_ok=True)
            return None

    def put(self, key: str, arr: np.ndarray) -> Path:
        """Store *arr* atomically under *key* and return its path."""
        p = self.path(key)
        self._make_dir(p.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(arr), allow_pickle=False)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    def create(self, key: str, shape: tuple[int, ...], dtype: Any = np.float32) -> tuple[np.ndarray, Callable[[], Path]]:
        """A writable memory-mapped ``.npy`` for *key* and a ``commit()`` that publishes it atomically.

        Features of millions of spots are written straight to disk as they are computed; until ``commit()`` the
        entry is a temporary file that :meth:`get` never sees (a caller that gives up unlinks ``arr.filename``).
        """
        p = self.path(key)
        self._make_dir(p.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".npy.tmp", dir=p.parent)
        os.close(fd)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))

        def commit() -> Path:
            arr.flush()
            os.replace(tmp, p)
            return p

        return arr, commit

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``get(key)``, else ``compute()`` then ``put`` (the computed array is returned)."""
        hit = self.get(key)
        if hit is not None:
            return hit
        arr = np.asarray(compute())
        self.put(key, arr)
        return arr

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def clear(self) -> int:
        """Delete every cached feature file; returns how many were removed."""
        n = 0
        base = self.root / "features"
        if base.is_dir():
            for f in base.glob("*/*.npy"):
                f.unlink(missing_ok=True)
                n += 1
        return n


def tile_feature_key(section: Any, tile_fullres_px: float, out_px: int, pad_value: int, encoder_identity: str) -> str:
    """Cache key of a section's tile features: image pixels, coordinates, scale, tile geometry and encoder."""
    return FeatureCache.key(
        "image-features-v1",
        section.image.content_hash(),
        coords_hash(section.coords),
        float(section.image_scale),
        float(tile_fullres_px),
        int(out_px),
        int(pad_value),
        str(encoder_identity),
    )
