"""Lazy images: read a region of a (possibly huge) histology image without decoding more than needed.

:class:`ImageSource` is the one interface the rest of stmm uses. Implementations:

* :class:`ArrayImage` — an in-memory array (e.g. ``uns["spatial"][lib]["images"]["lowres"]``);
* :class:`PILImage` — PNG/JPEG/…: the header is read at open time, pixels are decoded on the first
  ``read_region`` and kept (these formats have no random access);
* :class:`TiffImage` — TIFF/OME-TIFF: the highest-resolution level is read through tifffile's zarr store
  (only the tiles/strips a region touches are decoded), a memory map for uncompressed files, and a full
  decode only as the last resort.

All of them return RGB ``uint8`` regions; coordinates may fall outside the image and are padded.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from stmm_core.errors import DataError

_TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".svs")


def to_rgb_uint8(arr: Any, what: str = "image") -> np.ndarray:
    """Convert an image array to ``(H, W, 3) uint8``.

    Accepts grayscale ``(H, W)``/``(H, W, 1)``, RGB, RGBA (alpha dropped), ``uint8``, ``uint16`` (÷257),
    ``bool`` and float arrays in ``[0, 1]`` (×255). Raises :class:`DataError` for anything else.
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{what} has shape {tuple(a.shape)}; expected (height, width) or (height, width, 3|4)")
    if a.shape[2] in (1, 2):  # grey (+ alpha)
        a = np.repeat(a[:, :, :1], 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{what} contains NaN/inf pixel values; fix or re-export the image")
        if a.size and (a.min() < 0 or a.max() > 1.0 + 1e-6):
            raise DataError(
                f"{what} is a float image with values in [{a.min():.3g}, {a.max():.3g}]; float images must be "
                "in [0, 1] (divide by 255) or be given as uint8"
            )
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):  # int32 etc. (e.g. 16-bit PNG opened in mode "I")
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DataError(
                f"{what} has integer values in [{lo}, {hi}]; expected 0–255 (8-bit) or 0–65535 (16-bit)"
            )
        return (a // 257 if hi > 255 else a).astype(np.uint8)
    raise DataError(f"{what} has unsupported pixel type {a.dtype}; give uint8, uint16 or float in [0, 1]")


def _pad_region(
    src_h: int, src_w: int, x0: int, y0: int, x1: int, y1: int
) -> tuple[slice, slice, slice, slice] | None:
    """Source and destination slices of the part of ``[x0,x1)×[y0,y1)`` inside the image (None if none)."""
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, src_w), min(y1, src_h)
    if sx0 >= sx1 or sy0 >= sy1:
        return None
    return (slice(sy0, sy1), slice(sx0, sx1), slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))


class ImageSource(ABC):
    """A lazily read RGB image; coordinates are integer pixel bounds of *this* image."""

    _hash: str | None = None

    @property
    @abstractmethod
    def height(self) -> int:
        """Image height in pixels."""

    @property
    @abstractmethod
    def width(self) -> int:
        """Image width in pixels."""

    @abstractmethod
    def _read_inside(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Region fully inside the image → ``(y1-y0, x1-x0, 3) uint8``."""

    @abstractmethod
    def _compute_hash(self) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """One line: kind, size and origin of the image."""

    def read_region(self, x0: int, y0: int, x1: int, y1: int, pad_value: int = 255) -> np.ndarray:
        """Pixels of ``[x0, x1) × [y0, y1)`` as ``(y1-y0, x1-x0, 3) uint8``; outside parts are ``pad_value``."""
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        if x1 < x0 or y1 < y0:
            raise ValueError(f"empty/negative region ({x0}, {y0}, {x1}, {y1})")
        if x0 >= 0 and y0 >= 0 and x1 <= self.width and y1 <= self.height:
            return self._read_inside(x0, y0, x1, y1)
        sl = _pad_region(self.height, self.width, x0, y0, x1, y1)
        out = np.full((y1 - y0, x1 - x0, 3), pad_value, dtype=np.uint8)
        if sl is not None:
            ys, xs, dy, dx = sl
            out[dy, dx] = self._read_inside(xs.start, ys.start, xs.stop, ys.stop)
        return out

    def to_array(self) -> np.ndarray:
        """The whole image, ``(H, W, 3) uint8`` (decodes everything: only for small images)."""
        return self.read_region(0, 0, self.width, self.height)

    def content_hash(self) -> str:
        """sha256 hex of the pixel content or of the file bytes (computed once, memoised); a cache key."""
        if self._hash is None:
            self._hash = self._compute_hash()
        return self._hash

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class ArrayImage(ImageSource):
    """An in-memory image (converted once to ``(H, W, 3) uint8``, see :func:`to_rgb_uint8`)."""

    def __init__(self, arr: Any, name: str = "array") -> None:
        self._arr = to_rgb_uint8(arr, what=f"image {name!r}")
        self._name = name

    @property
    def height(self) -> int:
        return int(self._arr.shape[0])

    @property
    def width(self) -> int:
        return int(self._arr.shape[1])

    @property
    def array(self) -> np.ndarray:
        """The underlying ``(H, W, 3) uint8`` array (do not modify)."""
        return self._arr

    def _read_inside(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._arr[y0:y1, x0:x1].copy()

    def _compute_hash(self) -> str:
        h = hashlib.sha256(f"rgb8:{self.height}x{self.width}:".encode())
        h.update(memoryview(np.ascontiguousarray(self._arr)).cast("B"))
        return h.hexdigest()

    def describe(self) -> str:
        return f"in-memory {self._name} image {self.width}×{self.height}"


class _FileImage(ImageSource):
    """Common part of file-backed images: path, file-bytes hash."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _compute_hash(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()

    def describe(self) -> str:
        return f"{self.kind} {self.width}×{self.height} from {self.path}"


class PILImage(_FileImage):
    """PNG/JPEG/BMP… through Pillow; decoded (to RGB) on the first read and kept in memory.

    These formats cannot be read by region, so the first ``read_region`` decodes the whole file once
    (e.g. ~1 s for a 9,270×9,920 JPEG); later reads are array slices. Transparent pixels (RGBA, or
    palette images with transparency) are composited onto white.
    """

    def __init__(self, path: Path) -> None:
        from PIL import Image

        super().__init__(path)
        Image.MAX_IMAGE_PIXELS = None  # whole-slide images are legitimately huge
        try:
            with Image.open(self.path) as im:
                self._size = im.size
                self.kind = im.format or "image"
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError…
            raise DataError(f"cannot read image {self.path}: {exc}; give a PNG, JPEG or TIFF file") from None
        self._arr: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self._size[1])

    @property
    def width(self) -> int:
        return int(self._size[0])

    def _load(self) -> np.ndarray:
        if self._arr is None:
            from PIL import Image

            try:
                with Image.open(self.path) as im:
                    im.load()
                    if im.mode == "P":
                        im = im.convert("RGBA")
                    if im.mode in ("RGBA", "LA", "RGBa", "La"):
                        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                        arr = np.asarray(Image.alpha_composite(bg, im.convert("RGBA")).convert("RGB"))
                    elif im.mode == "RGB":
                        arr = np.asarray(im)
                    elif im.mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
                        arr = np.asarray(im.convert("RGB"))
                    else:  # I;16, I, F…: scale numerically
                        arr = to_rgb_uint8(np.asarray(im), what=f"image {self.path}")
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"cannot decode image {self.path}: {exc}; the file may be truncated") from None
            self._arr = np.ascontiguousarray(arr)
        return self._arr

    def _read_inside(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._load()[y0:y1, x0:x1].copy()


class TiffImage(_FileImage):
    """TIFF / OME-TIFF / pyramidal TIFF: the first series at its highest-resolution level, read by region.

    Access order: (1) tifffile's zarr store (decodes only the tiles or strips a region touches; needs the
    ``zarr`` package), (2) ``tifffile.memmap`` for uncompressed contiguous files, (3) a full decode of the
    level, kept in memory — used only when neither is possible (compressed file and no ``zarr``), because
    tifffile then has no public API for partial reads.
    """

    kind = "TIFF"

    def __init__(self, path: Path) -> None:
        import tifffile

        super().__init__(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                level = series.levels[0] if getattr(series, "levels", None) else series
                self._shape = tuple(int(s) for s in level.shape)
                self._axes = str(level.axes).upper()
                if tif.is_ome:
                    self.kind = "OME-TIFF"
        except Exception as exc:
            raise DataError(f"cannot read TIFF {self.path}: {exc}; is it a valid (OME-)TIFF file?") from None
        if "Y" not in self._axes or "X" not in self._axes:
            raise DataError(f"TIFF {self.path} has axes {self._axes!r}, no Y/X plane; give an RGB or grey image")
        self._chan = "S" if "S" in self._axes else ("C" if "C" in self._axes else None)
        self._store: Any = None
        self.access = "unopened"

    @property
    def height(self) -> int:
        return self._shape[self._axes.index("Y")]

    @property
    def width(self) -> int:
        return self._shape[self._axes.index("X")]

    def _open(self) -> Any:
        if self._store is not None:
            return self._store
        import tifffile

        try:
            try:
                import zarr

                store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
                self._store = zarr.open(store, mode="r")
                self.access = "zarr"
            except ImportError:
                try:
                    self._store = tifffile.memmap(self.path, series=0, level=0, mode="r")
                    self.access = "memmap"
                except ValueError:
                    # Compressed and no zarr: tifffile cannot decode a sub-region, decode the level once.
                    self._store = tifffile.imread(self.path, series=0, level=0)
                    self.access = "decoded"
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot decode TIFF {self.path}: {exc}; the file may be truncated") from None
        return self._store

    def _read_inside(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        store = self._open()
        index: list[Any] = []
        kept: list[str] = []
        for ax, size in zip(self._axes, self._shape):
            if ax == "Y":
                index.append(slice(y0, y1))
            elif ax == "X":
                index.append(slice(x0, x1))
            elif ax == self._chan:
                index.append(slice(0, min(size, 4)))
            else:  # time, z, extra planes: the first one
                index.append(0)
                continue
            kept.append(ax)
        region = np.asarray(store[tuple(index)])
        order = [kept.index("Y"), kept.index("X")] + ([kept.index(self._chan)] if self._chan else [])
        return to_rgb_uint8(np.transpose(region, order), what=f"TIFF {self.path}")


def open_image(path: str | Path) -> ImageSource:
    """Open an image file lazily: PNG/JPEG via Pillow, TIFF/OME-TIFF via tifffile (by region).

    Raises :class:`DataError` when the file is missing or not a readable image.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"image file not found: {p}; check the path (relative paths are from {Path.cwd()})")
    if p.is_dir():
        raise DataError(f"image path {p} is a folder; give the image file itself (PNG, JPEG or TIFF)")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if p.name.lower().endswith(_TIFF_SUFFIXES) or magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TiffImage(p)
    src = PILImage(p)
    if src.width <= 0 or src.height <= 0:  # e.g. Pillow's HDF5 stub "opens" an .h5ad as a 0×0 image
        raise DataError(f"cannot read image {p}: it is not an image ({src.kind}, {src.width}×{src.height} px); "
                        "give a PNG, JPEG or TIFF file with --image")
    return src


def as_image_source(image: Any, name: str = "image") -> ImageSource:
    """An :class:`ImageSource` from a path, an array or an existing source."""
    if isinstance(image, ImageSource):
        return image
    if isinstance(image, (str, Path)):
        return open_image(image)
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        return ArrayImage(image, name=name)
    raise DataError(f"{name}: expected an image path or an array, got {type(image).__name__}")
