"""Work-arounds for broken third-party installs, applied lazily and only when needed.

torchvision / CPU torch mismatch
--------------------------------
The only torchvision wheel on PyPI for torch 2.13.0 (0.28.0) is a CUDA build. With the CPU build of torch its
compiled extension (``torchvision/_C``) fails to load, and ``import torchvision`` then dies with
``operator torchvision::nms does not exist`` (pytorch/vision#9077): ``torchvision/_meta_registrations.py``
registers fake kernels for ``torchvision::nms`` / ``torchvision::qnms`` unconditionally. That breaks
``import timm`` and some ``transformers`` vision imports.

:func:`ensure_torchvision` fixes it *before* torchvision is first imported and only when the extension really
fails to load: it defines the two missing operator schemas in a ``torch.library.Library("torchvision",
"FRAGMENT")``. torchvision then imports; its pure-Python parts (transforms, models) work, its compiled ops
(nms, roi_align, image decoders) stay unavailable - decode images with PIL / tifffile.

This module does not import torch (or torchvision) at import time.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from typing import Any

__all__ = ["ensure_torchvision", "install_torchvision_hook", "import_timm", "torchvision_status"]

_LOCK = threading.RLock()
#: None (not checked yet) | "native" | "patched" | "absent" | "imported-before-check"
_STATE: str | None = None
#: Keeps the FRAGMENT library alive: its definitions are removed when the object is garbage-collected.
_TV_LIBRARY: Any = None
_MISSING_OPS = ("nms", "qnms")
_SCHEMA = "{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _op_defined(torch: Any, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_path(pkg_dir: str) -> str | None:
    """Path of ``torchvision/_C.<suffix>`` (found the way torchvision itself finds it), or None."""
    loader_details = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    spec = importlib.machinery.FileFinder(pkg_dir, loader_details).find_spec("_C")
    return spec.origin if spec is not None else None


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work with a CPU torch; idempotent and thread-safe.

    Returns what was found: ``"native"`` (the compiled extension loads, nothing to do), ``"patched"`` (it does
    not; the missing schemas were defined), ``"absent"`` (torchvision is not installed) or
    ``"imported-before-check"`` (torchvision was already imported, nothing can be changed any more).
    Does not import torchvision itself.
    """
    global _STATE, _TV_LIBRARY
    with _LOCK:
        if _STATE is not None:
            return _STATE
        if "torchvision" in sys.modules:
            _STATE = "imported-before-check"
            return _STATE
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            _STATE = "absent"
            return _STATE

        import torch

        if all(_op_defined(torch, name) for name in _MISSING_OPS):
            _STATE = "native"
            return _STATE

        pkg_dir = list(spec.submodule_search_locations)[0]
        ext = _extension_path(pkg_dir)
        if ext is not None:
            if os.name == "nt":  # pragma: no cover - mirrors torchvision's own DLL set-up
                os.add_dll_directory(pkg_dir)
            try:
                # Exactly what torchvision does on import; loading it first is harmless when it works.
                torch.ops.load_library(ext)
            except (OSError, ImportError, RuntimeError):
                pass
            if all(_op_defined(torch, name) for name in _MISSING_OPS):
                _STATE = "native"
                return _STATE

        lib = torch.library.Library("torchvision", "FRAGMENT")
        for name in _MISSING_OPS:
            if not _op_defined(torch, name):
                lib.define(_SCHEMA.format(name=name))
        _TV_LIBRARY = lib
        _STATE = "patched"
        return _STATE


def torchvision_status() -> str | None:
    """The result of :func:`ensure_torchvision` so far (None if it has not run)."""
    return _STATE


class _TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision` just before the first ``import torchvision``, then steps aside."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            _remove_hook()
            ensure_torchvision()
        return None  # let the regular finders import it


_HOOK: _TorchvisionImportHook | None = None


def _remove_hook() -> None:
    global _HOOK
    with _LOCK:
        if _HOOK is not None:
            try:
                sys.meta_path.remove(_HOOK)
            except ValueError:
                pass
            _HOOK = None


def install_torchvision_hook() -> None:
    """Arm :func:`ensure_torchvision` to run on the first ``import torchvision`` (imports nothing now).

    Useful where torchvision is imported indirectly (transformers, third-party plug-ins). Idempotent; a no-op
    once torchvision is imported or the check has run.
    """
    global _HOOK
    with _LOCK:
        if _HOOK is not None or _STATE is not None or "torchvision" in sys.modules:
            return
        _HOOK = _TorchvisionImportHook()
        sys.meta_path.insert(0, _HOOK)


def import_timm() -> Any:
    """Import and return :mod:`timm`, applying :func:`ensure_torchvision` first.

    Raises :class:`~stmm_core.errors.MissingDependency` when timm (or a usable torchvision) is missing.
    """
    from stmm_core.errors import MissingDependency

    if "timm" in sys.modules:
        return sys.modules["timm"]
    ensure_torchvision()
    try:
        import timm
    except ImportError as exc:
        raise MissingDependency(
            f"image encoders need the optional package 'timm' ({exc}); install it with: "
            "pip install 'stmm[vision]' (keep torch pinned, e.g. pip install timm torch==<your torch version>)"
        ) from None
    except RuntimeError as exc:  # a torchvision that still does not import
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingDependency(
            f"timm could not import torchvision ({first}); install a torchvision build matching your torch "
            "(pip install torchvision torch==<your torch version>)"
        ) from None
    return timm
