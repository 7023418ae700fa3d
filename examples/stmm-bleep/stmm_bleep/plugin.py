"""Registration (metadata only: ``stmm list`` and ``stmm info bleep`` read it without importing torch).

* ``stmm_pipeline_families``: the ``bleep`` family — its slots (an image encoder and a gene encoder from the
  catalogue, by name), its training-settings schema, its implementation and its capabilities.
* ``stmm_recipes``: a ready-made ``bleep`` spec (``stmm compose --recipe bleep``,
  ``stmm benchmark expression -p bleep``).
"""

from __future__ import annotations

from stmm_core import hookimpl
from stmm_core.family import FamilyInfo

RUN_FILES = ("spec.json", "model.safetensors", "preprocess.json", "bleep.json", "metrics.json", "loss.png")


@hookimpl
def stmm_pipeline_families():
    return [FamilyInfo(
        name="bleep",
        summary="BLEEP-style image <-> expression model: frozen image and gene encoders, projection heads trained "
                "contrastively; expression = similarity-weighted mean of the nearest training spots",
        slots={"image": ("image_encoder", True), "gene": ("gene_encoder", True)},
        impl="stmm_bleep.family:BleepPipeline",
        train_schema="stmm_bleep.params:BleepTrainParams",
        capabilities=("embedding", "expression", "scoring"),
        needs={"image": ("encode", "identity"), "gene": ("fit", "transform", "state", "load_state")},
        needs_text={"image": "an image encoder (e.g. stain-stats, resnet50)",
                    "gene": "a gene encoder with a saved state (e.g. hvg, pca)"},
        fit_options=("image", "scale", "counts_layer"),
        run_files=RUN_FILES,
        required_files=("spec.json", "model.safetensors", "preprocess.json"),
        trained_slots=("heads", "reference"),
        notes={"retrieval": "bleep: top1/top5 rank each spot's own expression by the cosine similarity of its image "
                            "embedding with every spot's expression embedding (the shared space)."},
    )]


@hookimpl
def stmm_recipes():
    return [{
        "name": "bleep",
        "summary": "Predict expression from the H&E image, BLEEP-style (example plug-in stmm-bleep): weight-free "
                   "stain-stats tile features and 1000 HVGs, projection heads trained with BLEEP's contrastive loss, "
                   "prediction = similarity-weighted mean expression of the 100 nearest training spots",
        "reference": "Xie et al., NeurIPS 2023 (BLEEP); the image encoder is frozen here (BLEEP fine-tunes a "
                     "ResNet-50)",
        "spec": {
            "pipeline": "bleep",
            "recipe": "bleep",
            "components": {
                "image": {"name": "stain-stats", "params": {}},
                "gene": {"name": "hvg", "params": {"n_top_genes": 1000, "flavor": "variance"}},
            },
            "train": {},
        },
    }]
