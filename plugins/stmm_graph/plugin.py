"""Registers the bundled spatial graph builders and graph models."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.catalogue import ComponentInfo
from stmm_graph.params import ContrastiveGAEParams, KnnGraphParams, RadiusGraphParams, VGAEParams


@hookimpl
def stmm_components():
    return [
        ComponentInfo("radius", "graph_builder", "stmm_graph.builders:RadiusGraph", RadiusGraphParams,
                      "all spots within a radius (default 1.5 x median spacing), symmetric"),
        ComponentInfo("knn", "graph_builder", "stmm_graph.builders:KnnGraph", KnnGraphParams,
                      "k nearest neighbours, symmetrised"),
        ComponentInfo("vgae", "graph_model", "stmm_graph.vgae:VGAE", VGAEParams,
                      "variational graph autoencoder (GCN/GAT/SAGE), feature decoder, optional DEC"),
        ComponentInfo("contrastive-gae", "graph_model", "stmm_graph.contrastive_gae:ContrastiveGAE",
                      ContrastiveGAEParams,
                      "graph autoencoder + DGI-style neighbourhood contrastive loss (GraphST family)"),
    ]
