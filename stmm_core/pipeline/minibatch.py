"""Mini-batch training of fusion + graph model over spatial partitions with an exact k-hop halo.

Full-batch training holds every activation of every layer for all N spots at once; at a million bins that is
tens of GB. Here the section is cut into spatial partitions (:mod:`stmm_core.pipeline.partitions`), each
extended by a halo of all spots within ``h`` graph hops, where ``h`` is the receptive field the fusion and the
graph model *declare* (``partition_support(params)`` → :class:`stmm_core.interfaces.PartitionSupport`; a
component that declares nothing is refused, with a message saying how to declare it or to use
``--set train.batch=full``). A partition's subgraph carries the globally normalised adjacency and the whole
graph's degrees, so for every core spot each layer sees exactly the neighbours and weights of the full graph:

* the forward pass restricted to the core rows equals the full-batch forward on those rows;
* the loss is evaluated on core rows only and weighted by ``n_core / N``, so summed over partitions it is the
  full-batch loss; with ``train.accumulate = true`` (default) the gradients of all partitions are accumulated
  and the optimiser steps once per epoch: the same gradient as full-batch training, at the memory of the
  largest partition. ``accumulate = false`` steps after every partition (more, noisier steps);
* the random draws of a step are made once over the whole section, in the order full-batch training makes
  them, and each partition reads its rows: the VAE noise (``GraphContext.noise``, models declaring
  ``noise``) and the contrastive negatives (``GraphContext.negatives``, models declaring ``negatives``: the
  model draws one permutation of the N spots, the fusion output at the permuted spots is computed with its
  own halo, and each partition gets its rows), so a step equals the full-batch step to float summation order;
* the embedding pass writes core rows only, so it equals the full-batch embedding (up to float summation
  order).

A component declared inexact (e.g. dropout > 0: masks are drawn per partition) still trains, with a warning and
``exact: false`` in ``metrics.json``. Global attention (``fusion.scope = global``) attends over all spots and
declares that it cannot be partitioned. DEC refinement keeps an N-row target and is full-batch only.

Memory: the partitions' index arrays and sub-adjacencies together are about ``(1 + halo) × (N + E)``
entries; activations are those of one partition (twice the fusion's for a model with negatives).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from stmm_core.errors import SpecError, StmmError
from stmm_core.pipeline.partitions import (  # noqa: F401 - re-exported: the partition API lives here too
    Partition,
    PartitionPlan,
    fused_rows,
    grid_partition,
    halo,
    make_partitions,
    normalised_adjacency,
    partition_plan,
    receptive_hops,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("stmm")


# --------------------------------------------------------------------------------------------- mode
def estimate_full_batch_bytes(n: int, n_edges: int, widths: dict[str, int]) -> int:
    """Rough peak of full-batch training: activations kept for backward (float32) + adjacency + edge buffers.

    ``widths``: ``fused`` (fusion output), ``hidden`` (sum of hidden widths), ``latent``, ``target`` and
    ``heads`` (attention heads, 0 without edge attention). Factor 3 covers autograd copies and optimiser
    temporaries (calibrated loosely on the 10k/30k synthetic runs of ``benchmarks/scale_stereomm.py``).
    """
    per_node = 4 * (4 * widths.get("fused", 0) + 3 * widths.get("hidden", 0) + 4 * widths.get("latent", 0)
                    + 3 * widths.get("target", 0))
    per_edge = 8 * 3 + 4 * 4 * max(widths.get("heads", 0), 0) * max(widths.get("fused", 0) // 2, 1) // 8
    return int(3 * (n * per_node + (n_edges + n) * per_edge))


def available_memory_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo (Linux), else 8 GiB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return 8 << 30


def choose_batch_mode(train: Any, n: int, n_edges: int, widths: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """``"full"`` or ``"partition"`` from ``train.batch`` (``auto``: partition when full batch would need more
    than half the available memory, or N is above ``train.partition_above``)."""
    from stmm_core.distributed.context import world_size

    mode = getattr(train, "batch", "full")
    info: dict[str, Any] = {"requested": mode}
    if mode == "auto" and world_size() > 1:
        mode = "partition"  # data-parallel training splits the partitions over the processes
        info["processes"] = world_size()
    if mode == "auto":
        est = estimate_full_batch_bytes(n, n_edges, widths)
        avail = available_memory_bytes()
        info.update(estimated_full_batch_gb=round(est / 2**30, 2), available_gb=round(avail / 2**30, 2))
        above = getattr(train, "partition_above", None)
        mode = "partition" if (est > avail // 2 or (above is not None and n > above)) else "full"
    info["mode"] = mode
    return mode, info


# --------------------------------------------------------------------------------------------- training
def _core_output(out: Any, n_sub: int, n_core: int) -> Any:
    """The model output restricted to the first ``n_core`` rows (fields with ``n_sub`` rows are cut)."""
    import dataclasses

    import torch

    changes = {}
    for f in dataclasses.fields(out):
        v = getattr(out, f.name)
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n_sub:
            changes[f.name] = v[:n_core]
    return dataclasses.replace(out, **changes)


def _clustered(out: Any) -> "torch.Tensor":
    fn = getattr(out, "clustered", None)
    return fn() if callable(fn) else out.mu


def train_partitioned(
    fusion: Any,
    model: Any,
    t_img: "torch.Tensor | None",
    t_gene: "torch.Tensor",
    target: "torch.Tensor",
    parts: list[Partition],
    opt: Any,
    params: list[Any],
    *,
    epochs: int,
    grad_clip: float | None,
    accumulate: bool,
    seed: int,
    lr: float,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    plan: PartitionPlan | None = None,
) -> list[dict[str, float]]:
    """Train for ``epochs`` passes over ``parts``; return one dict of loss terms per epoch (weighted means).

    The partition order is shuffled each epoch (seeded) when the optimiser steps per partition. ``plan``: the
    components' declarations (:func:`partition_plan`; computed here when not given).
    """
    import torch

    from stmm_core.distributed import context as dist_ctx

    plan = partition_plan(fusion, model) if plan is None else plan
    n_total = sum(p.n_core for p in parts)
    rng = np.random.default_rng(seed)
    world, rank = dist_ctx.world_size(), dist_ctx.rank()
    if world > 1 and not accumulate:
        raise SpecError("data-parallel training over partitions needs train.accumulate=true")
    history: list[dict[str, float]] = []
    device = t_gene.device
    for epoch in range(epochs):
        fusion.train()
        model.train()
        order = np.arange(len(parts)) if accumulate else rng.permutation(len(parts))
        if world > 1:  # data parallel: rank r takes partitions r, r + w, …; gradients are summed below
            order = order[rank::world]
        sums: dict[str, float] = {}
        if accumulate:
            opt.zero_grad(set_to_none=True)
        # the step's random draws over the whole section, in full-batch order, each partition reading its rows:
        # one noise draw per spot (a halo spot must not get a different sample in each partition) and one
        # permutation of all N spots for contrastive negatives (not one per partition)
        noise = torch.randn(n_total, int(model.latent_dim), device=device) if plan.noise else None
        perm = model.negative_permutation(n_total, device).cpu().numpy() if plan.negatives else None
        for i in order:
            part = parts[int(i)]
            idx = torch.from_numpy(part.nodes).to(device)
            part.ctx.noise = None if noise is None else noise.index_select(0, idx)
            img = None if t_img is None else t_img.index_select(0, idx)
            gene = t_gene.index_select(0, idx)
            if not accumulate:
                opt.zero_grad(set_to_none=True)
            if perm is not None:  # the fusion output at the permuted spots, each with its own halo
                if part.adj is None:
                    raise StmmError("contrastive negatives need partitions made by make_partitions (they carry the "
                                    "whole graph's adjacency)")
                part.ctx.negatives = fused_rows(fusion, t_img, t_gene, perm[part.nodes], part.adj, plan.fusion_hops,
                                                device)
            out = model(fusion(img, gene, part.ctx), part.ctx)
            core = _core_output(out, part.n_nodes, part.n_core)
            terms = model.loss(core, target.index_select(0, idx[: part.n_core]))
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise StmmError(
                    f"training diverged at epoch {epoch} (loss is {loss.item()}); lower train.lr (now {lr}) "
                    "with --set train.lr=…"
                )
            w = part.n_core / n_total
            (loss * w if accumulate else loss).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * w
            if not accumulate:
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
        if accumulate:
            if world > 1:
                dist_ctx.all_reduce_grads(params)
                sums = dist_ctx.all_reduce_scalars(sums)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
        for part in parts:
            part.ctx.noise = None
            part.ctx.negatives = None
        rec = {"epoch": epoch, **sums}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch, rec)
    return history


def embed_partitioned(
    fusion: Any, model: Any, t_img: "torch.Tensor | None", t_gene: "torch.Tensor", parts: list[Partition],
) -> np.ndarray:
    """The clustered embedding (VGAE: μ) for all spots, float32 ``(N, L)``, written one partition's core at a time."""
    import torch

    from stmm_core.distributed import context as dist_ctx

    fusion.eval()
    model.eval()
    n = sum(p.n_core for p in parts)
    out: np.ndarray | None = None
    device = t_gene.device
    world, rank = dist_ctx.world_size(), dist_ctx.rank()
    mine = parts[rank::world] if world > 1 else parts
    with torch.inference_mode():
        for part in mine:
            idx = torch.from_numpy(part.nodes).to(device)
            img = None if t_img is None else t_img.index_select(0, idx)
            emb = _clustered(model(fusion(img, t_gene.index_select(0, idx), part.ctx), part.ctx))
            emb = emb[: part.n_core].float().cpu().numpy()
            if out is None:
                out = np.empty((n, emb.shape[1]), dtype=np.float32)
            out[part.nodes[: part.n_core]] = emb
    if world > 1:  # every row was written by exactly one rank: a sum gathers them
        import torch.distributed as dist

        width = torch.tensor([0 if out is None else out.shape[1]])
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
        full = torch.zeros((n, int(width)), dtype=torch.float32) if out is None else torch.from_numpy(out)
        if out is not None:
            mask = np.zeros(n, dtype=bool)
            for part in mine:
                mask[part.nodes[: part.n_core]] = True
            full[torch.from_numpy(~mask)] = 0.0
        dist.all_reduce(full, op=dist.ReduceOp.SUM)
        out = full.numpy()
    assert out is not None
    return out


def set_partition_covariates(parts: list[Partition], covariates: "torch.Tensor | None") -> None:
    """Give each partition (core + halo) its rows of the per-spot decoder covariates ``(N, C)`` (static: once)."""
    if covariates is None:
        return
    import torch

    for pt in parts:
        pt.ctx.covariates = covariates.index_select(0, torch.from_numpy(pt.nodes).to(covariates.device))


def fit_partitioned(
    spec: Any,
    section: Any,
    graph: Any,
    fusion: Any,
    model: Any,
    t_img: "torch.Tensor | None",
    t_gene: "torch.Tensor",
    target: "torch.Tensor",
    opt: Any,
    params: list[Any],
    info: dict[str, Any],
    *,
    progress: bool = True,
) -> tuple[np.ndarray | None, list[dict[str, float]]]:
    """The partition branch of :func:`stmm_graph_fusion.fit.fit_graph_fusion`.

    Resolves ``train.batch``; returns ``(None, [])`` when the run should stay full batch, else trains over
    partitions and returns the embedding ``(N, L)`` float32 and the per-epoch history. Fills ``info["batch"]``.
    """
    import torch

    from stmm_core.progress import progress_bar

    tr = spec.train
    p = getattr(model, "params", None)
    widths = {
        "fused": int(fusion.out_dim), "target": int(target.shape[1]),
        "hidden": int(sum(getattr(p, "hidden", []) or [])), "latent": int(getattr(p, "latent", 0) or 0),
        "heads": int(getattr(getattr(fusion, "params", None), "heads", 0) or 0)
        if getattr(getattr(fusion, "params", None), "scope", None) == "neighbourhood" else 0,
    }
    mode, binfo = choose_batch_mode(tr, section.n_spots, graph.n_edges, widths)
    info["batch"] = binfo
    if mode == "full":
        return None, []
    if tr.dec_epochs:
        raise SpecError("DEC refinement (train.dec_epochs > 0) is full-batch only; use --set train.batch=full "
                        "or --set train.dec_epochs=0")
    names = {slot: ref.name for slot, ref in spec.components.items() if ref is not None}
    plan = partition_plan(fusion, model, names)
    if not plan.exact:
        log.warning("partition training only approximates full-batch training here: %s", "; ".join(plan.reasons))
    hops = plan.hops
    parts = make_partitions(section.coords, graph.edge_index, section.n_spots, tr.partition_size, hops,
                            t_gene.device, rank=graph.rank)
    from stmm_core.pipeline.covariates import context_covariates

    set_partition_covariates(parts, context_covariates(section, model, str(t_gene.device)))
    sizes = np.array([pt.n_nodes for pt in parts])
    binfo.update(partitions=len(parts), **plan.describe(), partition_size=tr.partition_size,
                 accumulate=tr.accumulate, max_partition_nodes=int(sizes.max()),
                 halo_fraction=round(float(sizes.sum()) / section.n_spots - 1, 4))
    log.info("training over %d partitions (%d-hop halo, largest %d spots)", len(parts), hops, sizes.max())
    with progress_bar(total=tr.epochs, desc=f"train ({len(parts)} partitions)", unit="epoch",
                      enabled=progress) as bar:
        def on_epoch(epoch: int, rec: dict[str, float]) -> None:
            bar.update(1)
            if epoch % 20 == 0:
                bar.set_postfix(loss=f"{rec['loss']:.4f}")

        history = train_partitioned(fusion, model, t_img, t_gene, target, parts, opt, params, epochs=tr.epochs,
                                    grad_clip=tr.grad_clip, accumulate=tr.accumulate, seed=tr.seed, lr=tr.lr,
                                    on_epoch=on_epoch, plan=plan)
    return embed_partitioned(fusion, model, t_img, t_gene, parts), history
