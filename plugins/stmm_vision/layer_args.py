"""Model keyword arguments that name layer classes (``mlp_layer="timm.layers.SwiGLUPacked"``,
``act_layer="torch.nn.SiLU"``), resolved from an allow-list of modules.

Published pathology encoders are built with layer classes passed to ``timm.create_model`` (UNI2-h, Virchow2). A
spec or zoo entry is JSON, so it names them as dotted paths; only attributes of the modules in
:data:`ALLOWED_MODULES` that are ``torch.nn.Module`` subclasses (or
``functools.partial`` of one, as ``timm.layers.SwiGLUPacked`` is) are accepted: nothing else is imported or called.
Strings without a dot are left to timm (``act_layer="silu"`` is timm's own name lookup).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

from stmm_core.errors import SpecError

#: The only modules a layer class may come from.
ALLOWED_MODULES = ("timm.layers", "torch.nn")


def _resolve(key: str, path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if module not in ALLOWED_MODULES or not attr.isidentifier() or attr.startswith("_"):
        raise SpecError(
            f"model_kwargs.{key}={path!r}: layer classes are taken only from {', '.join(ALLOWED_MODULES)} "
            "(e.g. timm.layers.SwiGLUPacked, torch.nn.SiLU); nothing else is imported"
        )
    if module == "timm.layers":
        from stmm_core.compat import ensure_torchvision

        ensure_torchvision()
    obj = getattr(importlib.import_module(module), attr, None)
    import torch

    cls = obj.func if isinstance(obj, functools.partial) else obj  # timm.layers.SwiGLUPacked = partial(GluMlp, ...)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise SpecError(f"model_kwargs.{key}={path!r}: {module} has no layer class {attr!r}")
    return obj


def resolve_layer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """*kwargs* with every dotted-path string turned into its layer class (allow-listed modules only)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        out[key] = _resolve(key, value) if isinstance(value, str) and "." in value else value
    return out
