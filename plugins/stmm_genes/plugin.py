"""Registers the bundled gene feature extractors."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_genes.params import HVGParams, PCAGeneParams

IMPL = "stmm_genes.hvg:HVGGeneEncoder"


@hookimpl
def stmm_components():
    return [
        ComponentInfo("hvg", "gene_encoder", IMPL, HVGParams,
                      "library-size normalisation, log1p, highly variable genes, z-score"),
        ComponentInfo("pca", "gene_encoder", IMPL, PCAGeneParams,
                      "as hvg, followed by PCA"),
    ]
