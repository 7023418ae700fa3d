"""Shared helpers of the peer-package wrappers: the dependency check, a Section as AnnData, the clustering."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from stmm_core.errors import MissingDependency

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.section import Section

#: What users run to get the peer packages (the pinned versions live in pyproject's ``peers`` extra).
INSTALL_HINT = "pip install .[peers]  (from the stmm checkout; or pip install 'stmm[peers]')"


def missing_modules(modules: list[str]) -> list[str]:
    """The names in *modules* that cannot be imported (checked without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def missing_message(recipe: str, modules: list[str]) -> str:
    """The one message for a peer recipe whose packages are not installed."""
    return (f"{recipe} runs the peer package itself, which is not installed here (missing module"
            f"{'s' if len(modules) != 1 else ''}: {', '.join(modules)}): {INSTALL_HINT}")


def require(recipe: str, modules: list[str]) -> None:
    """Raise :class:`MissingDependency` naming ``pip install .[peers]`` when a module is missing."""
    lacking = missing_modules(modules)
    if lacking:
        raise MissingDependency(missing_message(recipe, lacking))


def section_anndata(section: "Section") -> "anndata.AnnData":
    """Raw counts (float32 CSR), gene symbols as var_names (unique), ``obsm["spatial"]`` = full-res (x, y)."""
    import anndata
    import pandas as pd

    names = section.gene_symbols if section.gene_symbols is not None else section.gene_names
    adata = anndata.AnnData(X=section.counts.astype(np.float32).tocsr(copy=True),
                            obs=pd.DataFrame(index=pd.Index(section.obs_names, dtype=str)),
                            var=pd.DataFrame(index=pd.Index([str(n) for n in names], dtype=str)))
    adata.var_names_make_unique()
    adata.obsm["spatial"] = np.asarray(section.coords, dtype=np.float64).copy()
    return adata


def cluster(embedding: np.ndarray, n_domains: int, seed: int, task: Any) -> np.ndarray:
    """stmm's clustering task (the recipe spec's ``task``, default gmm: PCA 20 + tied GMM) → int64 labels."""
    return np.asarray(task.run(np.asarray(embedding, dtype=np.float32), int(n_domains), seed), dtype=np.int64)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The packages print progress (and tqdm bars) to stdout/stderr; keep the benchmark's own output readable."""
    sink = io.StringIO()
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old
