"""The graph-fusion pipeline (StereoMM and relatives).

section → gene features (N, D_g) ┐
        → image features (N, D_i) ├→ fusion (trainable) → graph model (VGAE) → embedding μ (N, L) → task
        → spatial graph (2, E)   ┘
Fusion and graph model are trained jointly, full batch or over spatial partitions with an exact halo
(``train.batch``, :mod:`stmm_core.pipeline.minibatch`), float32.

This is the graph-fusion family's own code (a bundled plug-in, :mod:`stmm_graph_fusion`); what every family
shares (building components, seeding, image features, the run-folder writer) is imported from the core.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import StmmError
from stmm_core.pipeline.result import FitResult
from stmm_core.profiling import StageProfiler

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec

log = logging.getLogger("stmm")


def _build(slot: str, spec: "PipelineSpec") -> Any:
    from stmm_core.pipeline_base import build_component

    return build_component(spec, slot)


def fit_graph_fusion(
    spec: "PipelineSpec",
    section: "Section",
    *,
    n_domains: int | str | None,
    device: str = "cpu",
    cache: Any | None = None,
    progress: bool = True,
    image_features: np.ndarray | None = None,
    gene_transform: Any | None = None,
    embedding_transform: Any | None = None,
) -> FitResult:
    """Fit the pipeline on one section and return the embedding, the domains and the trained weights.

    ``image_features`` ``(N, D)``: precomputed per-spot image features (e.g. from a data-parallel encoding run
    or an earlier fit); they replace the spec's image encoder and go through the same z-score + PCA.
    ``gene_transform(x) -> x``: applied to the gene features before training (e.g. per-section standardisation of a
    multi-section fit). ``embedding_transform(emb) -> emb``: what is clustered instead of the embedding (e.g. a
    batch correction); the corrected embedding is kept in ``obsm["X_stmm_corrected"]``.
    """
    import torch

    from stmm_core.interfaces import GraphContext
    from stmm_core.pipeline.image_features import encode_section, reduce_image_features
    from stmm_core.progress import progress_bar
    from stmm_core.seeding import seed_everything

    if isinstance(n_domains, str) and n_domains != "auto":
        raise StmmError(f"n_domains must be a number or 'auto', got {n_domains!r}")
    if isinstance(n_domains, int) and not 1 <= n_domains <= section.n_spots:
        raise StmmError(f"--n-domains {n_domains} is not possible with {section.n_spots} spots; use 1…{section.n_spots}")
    seed = spec.train.seed
    prof = StageProfiler()
    info: dict[str, Any] = {"n_spots": section.n_spots, "n_genes": section.n_genes, "device": device}

    seed_everything(seed)
    with prof.stage("gene features"):
        gene_enc = _build("gene", spec)
        gene_x = np.asarray(gene_enc.fit_transform(section), dtype=np.float32)
        if gene_transform is not None:
            gene_x = np.asarray(gene_transform(gene_x), dtype=np.float32)
    info["gene_dim"] = int(gene_x.shape[1])

    img_x = None
    if image_features is not None:
        feats = np.asarray(image_features)
        if feats.ndim != 2 or feats.shape[0] != section.n_spots:
            raise StmmError(f"image_features must be ({section.n_spots}, D), got {feats.shape}")
        with prof.stage("image features"):
            img_x = reduce_image_features(feats, spec.features.image_pca, seed)
        info["image"] = {"encoder": "precomputed", "cached": True, "input_px": None}
        info["image_dim"] = int(img_x.shape[1])
    elif spec.components.get("image") is not None:
        if section.image is None:
            raise StmmError(
                f"the spec has an image encoder but section {section.name!r} has no image: give the image "
                "(--image PATH --scale S) or compose without one (stmm compose --encoder none, or the recipe "
                "stereomm-expression)"
            )
        with prof.stage("image features"):
            seed_everything(seed)  # random-init encoders are reproducible
            img_enc = _build("image", spec)
            raw, img_info = encode_section(section, img_enc, spec.tiles, device=device, cache=cache,
                                           progress=progress)
            img_x = reduce_image_features(raw, spec.features.image_pca, seed)
            del img_enc
            from stmm_core.faults import point

            point("encode")
        info["image"] = img_info
        info["image_dim"] = int(img_x.shape[1])

    with prof.stage("graph"):
        builder = _build("builder", spec)
        graph = builder.build(section.coords, section.spot_diameter)
    info["graph"] = {"edges": graph.n_edges, "mean_degree": round(graph.mean_degree(), 3), **graph.meta}

    if img_x is not None and _fusion_param(spec, "img_weight") == "auto":
        with prof.stage("image weight"):
            spec, img_x, info["image_weight"] = resolve_auto_image_weight(spec, img_x, gene_x, section, graph, seed)

    with prof.stage("train"):
        seed_everything(seed)
        fusion = _build("fusion", spec)
        model = _build("graph", spec)
        fusion.setup(None if img_x is None else img_x.shape[1], gene_x.shape[1])
        t_img = None if img_x is None else torch.from_numpy(img_x).to(device)
        t_gene = torch.from_numpy(gene_x).to(device)
        from stmm_core.pipeline.target import reconstruction_target

        target = reconstruction_target(getattr(spec.train, "target", "inputs"), fusion, t_img, t_gene).detach()
        model.setup(fusion.out_dim, target.shape[1], section.n_spots)
        fusion.to(device)
        model.to(device)
        ctx = GraphContext(edge_index=graph.torch_edge_index(device), n_nodes=section.n_spots,
                           distances=None if graph.distances is None else torch.as_tensor(graph.distances, device=device),
                           rank=None if graph.rank is None else torch.as_tensor(graph.rank, device=device))
        from stmm_core.pipeline.covariates import context_covariates

        ctx.covariates = context_covariates(section, model, device)
        params = [p for p in list(fusion.parameters()) + list(model.parameters()) if p.requires_grad]
        opt = torch.optim.Adam(params, lr=spec.train.lr, weight_decay=spec.train.weight_decay)
        history: list[dict[str, float]] = []

        embedding = None
        if spec.train.batch != "full":  # spatial partitions with an exact halo when full batch does not fit
            from stmm_core.pipeline.minibatch import fit_partitioned

            embedding, history = fit_partitioned(spec, section, graph, fusion, model, t_img, t_gene, target, opt,
                                                 params, info, progress=progress)
        if embedding is None:
            def step(epoch: int) -> dict[str, float]:
                fusion.train()
                model.train()
                opt.zero_grad(set_to_none=True)
                out = model(fusion(t_img, t_gene, ctx), ctx)
                terms = model.loss(out, target)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise StmmError(
                        f"training diverged at epoch {epoch} (loss is {loss.item()}); lower train.lr "
                        f"(now {spec.train.lr}) with --set train.lr=…"
                    )
                loss.backward()
                if spec.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, spec.train.grad_clip)
                opt.step()
                return {"epoch": epoch, **{k: float(v.detach()) for k, v in terms.items()}}

            total = spec.train.epochs + spec.train.dec_epochs
            with progress_bar(total=total, desc="train", unit="epoch", enabled=progress) as bar:
                for epoch in range(spec.train.epochs):
                    history.append(step(epoch))
                    if epoch == 0:
                        from stmm_core.faults import point

                        point("train")
                    bar.update(1)
                    if epoch % 20 == 0:
                        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                if spec.train.dec_epochs:
                    if not getattr(model.params, "dec", False) or not hasattr(model, "start_refinement"):
                        raise StmmError("train.dec_epochs > 0 needs a graph model with dec=true (--set graph.dec=true)")
                    if n_domains is None or n_domains == "auto":
                        raise StmmError("DEC refinement needs the number of domains: pass --n-domains K (a number)")
                    mu = _embed(fusion, model, t_img, t_gene, ctx)
                    centres = model.start_refinement(mu, n_domains, seed)
                    opt.add_param_group({"params": [centres], "weight_decay": 0.0})
                    params.append(centres)
                    interval = int(getattr(model.params, "dec_update_interval", 10))
                    tol = float(getattr(model.params, "dec_tol", 1e-3))
                    for i in range(spec.train.dec_epochs):
                        if i % interval == 0:
                            changed = model.update_target(_embed(fusion, model, t_img, t_gene, ctx))
                            if i > 0 and changed < tol:
                                info["dec_stopped_at"] = i
                                break
                        history.append(step(spec.train.epochs + i))
                        bar.update(1)
            embedding = _embed(fusion, model, t_img, t_gene, ctx).cpu().numpy().astype(np.float32)
    if not np.isfinite(embedding).all():
        raise StmmError("the embedding contains NaN/inf; lower train.lr or check the input features")

    labels = None
    extra_obsm: dict[str, np.ndarray] = {}
    clustered = embedding
    if embedding_transform is not None:
        with prof.stage("batch correction"):
            clustered = np.asarray(embedding_transform(embedding), dtype=np.float32)
        extra_obsm["X_stmm_corrected"] = clustered
    if n_domains == "auto":  # -k auto: K chosen from the embedding by a stated criterion, candidates reported
        from stmm_core.pipeline.auto_k import choose_n_domains

        with prof.stage("choose K"):
            n_domains, info["auto_k"] = choose_n_domains(clustered, seed)
    if n_domains is not None:
        with prof.stage("clustering"):
            task = _build("task", spec)
            labels = np.asarray(task.run(clustered, n_domains, seed), dtype=np.int64)
            if spec.domains.refine_neighbors > 1:
                from stmm_core.pipeline.refine import refine_labels

                raw_labels = labels
                labels = refine_labels(section.coords, labels, spec.domains.refine_neighbors)
                info["refined_spots"] = int((raw_labels != labels).sum())
            extra = getattr(task, "last_info", None)
            if extra:
                info["task"] = extra

    state: dict[str, torch.Tensor] = {}
    for prefix, module in (("fusion", fusion), ("graph", model)):
        for k, v in module.state_dict().items():
            state[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    gene_state = gene_enc.state() if hasattr(gene_enc, "state") else None
    return FitResult(spec, embedding, labels, history, state, prof, info, gene_state, graph=graph, obsm=extra_obsm)


def _fusion_param(spec: "PipelineSpec", name: str) -> Any:
    ref = spec.components.get("fusion")
    return None if ref is None else ref.params.get(name)


def resolve_auto_image_weight(
    spec: "PipelineSpec", img_x: np.ndarray, gene_x: np.ndarray, section: "Section", graph: Any, seed: int
) -> tuple["PipelineSpec", np.ndarray | None, dict[str, Any]]:
    """``fusion.img_weight = "auto"``: choose the weight from the data (:mod:`stmm_core.pipeline.image_weight`).

    Returns the spec as it is fitted (the chosen weight written in; at weight 0 the image component removed,
    so the saved pipeline re-embeds without the image), the image features (None when left out) and the
    evidence for ``metrics.json``.
    """
    from stmm_core.pipeline.image_weight import auto_image_weight
    from stmm_core.spec import parse_spec

    weight, evidence = auto_image_weight(img_x, gene_x, section.coords, graph.edge_index, seed=seed)
    weight = round(weight, 3)
    data = spec.to_dict()
    data["components"]["fusion"]["params"]["img_weight"] = weight
    dropped = weight == 0.0
    if dropped:
        data["components"]["image"] = None
    evidence = {"requested": "auto", "weight": weight, "image_left_out": dropped, **evidence}
    log.info("automatic image weight %.3f (held-out R² of image → gene features %.3f)%s", weight,
             evidence["cv_r2_image_to_gene"], "; the image is left out" if dropped else "")
    return parse_spec(data), (None if dropped else img_x), evidence


def _embed(fusion: Any, model: Any, t_img: Any, t_gene: Any, ctx: Any) -> "torch.Tensor":
    """The model's clustered embedding (VGAE: posterior mean μ) in eval mode (no sampling, no dropout)."""
    import torch

    fusion.eval()
    model.eval()
    with torch.inference_mode():
        return model(fusion(t_img, t_gene, ctx), ctx).clustered().clone()


def n_params(state: dict[str, Any]) -> int:
    return int(sum(math.prod(v.shape) for v in state.values()))
