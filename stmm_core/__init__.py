"""stmm: a model zoo and plug-in framework for multimodal spatial transcriptomics.

``import stmm_core`` is cheap: it never imports torch, torch_geometric, timm or scanpy. Heavy libraries are
imported by components on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from stmm_core.errors import StmmError  # noqa: E402
from stmm_core.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "StmmError", "hookimpl"]
