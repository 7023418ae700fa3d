"""Run a trained graph-fusion pipeline on a section without refitting: the embedding of a saved pipeline.

The features are rebuilt exactly as :func:`stmm_graph_fusion.fit.fit_graph_fusion` builds them:
the gene encoder restores its fitted state (gene list, scaling, PCA) instead of refitting; image features
come from the spec's encoder (random-init encoders are seeded as during the fit) and are z-scored and
PCA-reduced with the spec's seed; the spatial graph is rebuilt from the coordinates. The trained fusion and
graph-model weights are then loaded strictly and the posterior mean is returned. On the section a pipeline
was fitted on, with the same thread count, the result equals the fit's embedding bit for bit.

Image-feature PCA is fitted on the section being embedded (as in the fit); on another section it adapts to
that section, like the gene z-scores of encoders without a saved state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.hub.pipeline_dir import LoadedPipeline


def embed_section(pipeline: "LoadedPipeline", section: "Section", *, device: str = "cpu", cache: Any | None = None,
                  progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, L)`` float32 embedding of *section* under the loaded pipeline, and a dict describing the run."""
    import torch

    from stmm_core.interfaces import GraphContext
    from stmm_graph_fusion.fit import _build, _embed
    from stmm_core.pipeline.image_features import encode_section, reduce_image_features
    from stmm_core.seeding import seed_everything

    spec = pipeline.spec
    if spec.pipeline != "graph-fusion":
        raise StmmError(f"'stmm embed' runs graph-fusion pipelines; this one is {spec.pipeline!r}")
    seed = spec.train.seed
    info: dict[str, Any] = {"n_spots": section.n_spots, "spec_hash": spec.hash()}

    seed_everything(seed)
    gene_enc = _build("gene", spec)
    if pipeline.gene_state is not None and hasattr(gene_enc, "load_state"):
        gene_enc.load_state(pipeline.gene_state)
        gene_x = np.asarray(gene_enc.transform(section), dtype=np.float32)
        info["gene_features"] = "saved state"
    else:
        gene_x = np.asarray(gene_enc.fit_transform(section), dtype=np.float32)
        info["gene_features"] = "fitted on this section (the encoder keeps no state)"

    img_x = None
    if spec.components.get("image") is not None:
        if section.image is None:
            raise StmmError(f"this pipeline uses image features but section {section.name!r} has no image: give "
                            "one with --image PATH --scale S")
        seed_everything(seed)
        img_enc = _build("image", spec)
        raw, img_info = encode_section(section, img_enc, spec.tiles, device=device, cache=cache, progress=progress)
        img_x = reduce_image_features(raw, spec.features.image_pca, seed)
        info["image"] = img_info
        del img_enc

    builder = _build("builder", spec)
    graph = builder.build(section.coords, section.spot_diameter)

    seed_everything(seed)
    fusion = _build("fusion", spec)
    model = _build("graph", spec)
    fusion.setup(None if img_x is None else img_x.shape[1], gene_x.shape[1])
    t_img = None if img_x is None else torch.from_numpy(img_x).to(device)
    t_gene = torch.from_numpy(gene_x).to(device)
    from stmm_core.pipeline.target import reconstruction_target

    target = reconstruction_target(getattr(spec.train, "target", "inputs"), fusion, t_img, t_gene)
    model.setup(fusion.out_dim, target.shape[1], section.n_spots)
    for prefix, module in (("fusion", fusion), ("graph", model)):
        state = pipeline.component_state(prefix)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise StmmError(
                f"the saved {prefix} weights do not fit this section's features ({first[1] if len(first) > 1 else first[0]}"
                "); the section must have the genes and image the pipeline was trained with"
            ) from None
    fusion.to(device)
    model.to(device)
    from stmm_core.pipeline.covariates import context_covariates

    ctx = GraphContext(edge_index=graph.torch_edge_index(device), n_nodes=section.n_spots,
                       covariates=context_covariates(section, model, device))
    embedding = _embed(fusion, model, t_img, t_gene, ctx).cpu().numpy().astype(np.float32)
    if not np.isfinite(embedding).all():
        raise StmmError("the embedding contains NaN/inf; check the input features")
    return embedding, info
