"""Registers the graph-fusion pipeline family (metadata only; the runner is imported on use)."""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.family import FamilyInfo
from stmm_graph_fusion.settings import SLOTS


@hookimpl
def stmm_pipeline_families():
    return [FamilyInfo(
        name="graph-fusion",
        summary="gene + image features fused per spot, a graph model over the spatial graph, domains from the "
                "embedding (StereoMM, GraphST-style)",
        slots=SLOTS,
        impl="stmm_graph_fusion.family:GraphFusionPipeline",
        train_schema="stmm_graph_fusion.settings:TrainSpec",
        capabilities=("embedding",),
        fit_options=("n_domains", "labels", "image", "scale", "coords", "counts_layer", "bin_size", "region", "zarr",
                     "consensus", "markers", "batch_correct"),
        run_files=("spec.json", "model.safetensors", "preprocess.json", "metrics.json", "loss.png", "domains.png"),
        required_files=("spec.json", "model.safetensors"),
        trained_slots=("fusion", "graph"),
    )]
