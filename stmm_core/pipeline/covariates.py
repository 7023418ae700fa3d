"""Per-spot covariates a graph model's decoder can receive beside its latent code (scVI-style conditioning).

A covariate the decoder is given need not be encoded in the latent, so the clustered embedding is not pulled
towards it. The one offered is the sequencing depth of a spot, which dominates the first principal component of
log-normalised expression on Visium sections (``benchmarks/CONSENSUS.md``, "a sequencing-depth domain").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section

#: names a model may ask for, with what they are
COVARIATES = {
    "log_library": "log(1 + total counts of the spot over all genes), standardised over the section(s) fitted",
}


def spot_covariates(section: "Section", names: Sequence[str]) -> np.ndarray | None:
    """The covariates ``names`` of every spot as float32 ``(N, len(names))``, or None when ``names`` is empty.

    Each column is standardised (mean 0, sd 1) over the spots given; a constant column becomes 0.
    """
    if not names:
        return None
    cols = []
    for name in names:
        if name == "log_library":
            col = np.log1p(np.asarray(section.counts.sum(axis=1), dtype=np.float64).ravel())
        else:
            raise StmmError(f"unknown covariate {name!r}; choose from {', '.join(COVARIATES)}")
        sd = float(col.std())
        cols.append((col - col.mean()) / sd if sd > 0 else np.zeros_like(col))
    return np.stack(cols, axis=1).astype(np.float32)


def model_covariates(model: object) -> tuple[str, ...]:
    """The covariate names a graph model's decoder asks for (its params' ``decoder_covariates``; none if absent)."""
    params = getattr(model, "params", None)
    return tuple(getattr(params, "decoder_covariates", None) or ())


def context_covariates(section: "Section", model: object, device: str = "cpu") -> "object | None":
    """``spot_covariates`` for what ``model`` asks for, as a float32 tensor on ``device`` (None when nothing)."""
    cov = spot_covariates(section, model_covariates(model))
    if cov is None:
        return None
    import torch

    return torch.from_numpy(cov).to(device)
