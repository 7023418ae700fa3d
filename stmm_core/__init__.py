"""stmm: a model zoo and plug-in framework for multimodal spatial transcriptomics.

``import stmm_core`` is cheap: it never imports torch, torch_geometric, timm or scanpy. Heavy libraries are
imported by components on first use.

The core names no pipeline family and imports no bundled plug-in: components (:mod:`stmm_core.catalogue`) and
pipeline families (:mod:`stmm_core.family`, implemented against :mod:`stmm_core.pipeline_base`) come from plug-in
packages through the ``stmm`` entry points (:mod:`stmm_core.hookspecs`), the bundled ones under ``plugins/``
included.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin while waiting make torch 10x slower on a busy laptop or a shared 2-core node
# (measured: 1.71 s vs 0.14 s per VGAE epoch on DLPFC with one other busy process). Passive waiting costs
# nothing measurable on an idle machine. Only effective before torch is first imported; users may override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from stmm_core.errors import StmmError  # noqa: E402
from stmm_core.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "StmmError", "hookimpl"]
