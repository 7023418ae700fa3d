"""Mini-batch training of fusion + graph model over spatial partitions with an exact k-hop halo.

Full-batch training holds every activation of every layer for all N spots at once; at a million bins that is
tens of GB. Here the section is cut into spatial partitions (square grid cells of about ``partition_size``
spots); each partition is extended by a halo of all spots within ``h`` graph hops, where ``h`` is the
receptive field of fusion + graph model (one hop per graph layer on the longest path from input to the
reconstruction; one more for neighbourhood attention). A partition's subgraph is cut from the *globally
normalised* adjacency ``D^-1/2 (A+I) D^-1/2``, so for every core spot each layer sees exactly the
neighbours and degrees it sees in the full graph:

* the forward pass restricted to the core rows equals the full-batch forward on those rows;
* the loss is evaluated on core rows only and weighted by ``n_core / N``, so summed over partitions it is the
  full-batch loss; with ``train.accumulate = true`` (default) the gradients of all partitions are accumulated
  and the optimiser steps once per epoch: the same gradient as full-batch training, at the memory of the
  largest partition. ``accumulate = false`` steps after every partition (more, noisier steps);
* the embedding pass writes core rows only, so it equals the full-batch embedding (up to float summation
  order).

The only difference from full-batch training is the random draw of the VAE noise (drawn per partition).
Global attention (``fusion.scope = global``) attends over all spots and cannot be partitioned exactly: it is
refused. DEC refinement keeps an N-row target and is full-batch only.

Memory: the partitions' index arrays and sub-adjacencies together are about ``(1 + halo) × (N + E)``
entries; activations are those of one partition.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from stmm_core.errors import SpecError, StmmError

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    import torch

    from stmm_core.interfaces import GraphContext

log = logging.getLogger("stmm")


@dataclass
class Partition:
    """One partition: ``nodes`` = core spots first (``n_core`` of them), then the halo; ``ctx`` its subgraph."""

    nodes: np.ndarray  # int64 (n_core + n_halo,)
    n_core: int
    ctx: "GraphContext"

    @property
    def n_nodes(self) -> int:
        return int(len(self.nodes))


# --------------------------------------------------------------------------------------------- partitions
def grid_partition(coords: np.ndarray, partition_size: int) -> np.ndarray:
    """Spatial partition ids ``(N,)`` int64: square grid cells holding about ``partition_size`` spots each.

    Cells are sized from the bounding box and the spot density; empty cells are dropped and the ids
    renumbered ``0..P-1`` in row-major cell order. Deterministic.
    """
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if partition_size >= n:
        return np.zeros(n, dtype=np.int64)
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-9)
    n_cells = max(1, int(math.ceil(n / partition_size)))
    # square cells: nx · ny ≈ n_cells with nx / ny ≈ span_x / span_y
    nx = max(1, int(round(math.sqrt(n_cells * span[0] / span[1]))))
    ny = max(1, int(math.ceil(n_cells / nx)))
    ix = np.minimum(((xy[:, 0] - lo[0]) / span[0] * nx).astype(np.int64), nx - 1)
    iy = np.minimum(((xy[:, 1] - lo[1]) / span[1] * ny).astype(np.int64), ny - 1)
    _, ids = np.unique(iy * nx + ix, return_inverse=True)
    return ids.astype(np.int64).reshape(-1)


def normalised_adjacency(edge_index: np.ndarray, n: int) -> "sp.csr_matrix":
    """``D^-1/2 (A+I) D^-1/2`` as scipy CSR float32 (same values as :func:`stmm_graph.layers.build_adj_norm`)."""
    import scipy.sparse as sp

    ei = np.asarray(edge_index, dtype=np.int64)
    keep = ei[0] != ei[1]
    loops = np.arange(n, dtype=np.int64)
    row = np.concatenate([ei[1][keep], loops])
    col = np.concatenate([ei[0][keep], loops])
    a = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0  # duplicates count once
    deg = np.diff(a.indptr).astype(np.float64)
    dinv = (1.0 / np.sqrt(deg)).astype(np.float32)
    rows = np.repeat(np.arange(n), np.diff(a.indptr))
    a.data = dinv[rows] * dinv[a.indices]
    return a


def halo(adj: "sp.csr_matrix", core: np.ndarray, hops: int) -> np.ndarray:
    """Sorted ids of the spots within ``hops`` graph hops of ``core`` that are not in ``core``."""
    n = adj.shape[0]
    mask = np.zeros(n, dtype=bool)
    mask[core] = True
    frontier = np.asarray(core, dtype=np.int64)
    for _ in range(hops):
        if frontier.size == 0:
            break
        nb = np.unique(adj[frontier].indices)
        new = nb[~mask[nb]]
        mask[new] = True
        frontier = new
    mask[core] = False
    return np.flatnonzero(mask).astype(np.int64)


def _sub_context(adj: "sp.csr_matrix", nodes: np.ndarray, device: Any) -> "GraphContext":
    """GraphContext of the subgraph on ``nodes`` with the global normalisation (rows/columns cut, not renormalised)."""
    import warnings

    import torch

    from stmm_core.interfaces import GraphContext

    sub = adj[nodes][:, nodes].tocsr()
    sub.sort_indices()
    m = len(nodes)
    coo = sub.tocoo()
    off = coo.row != coo.col
    # edge_index in PyG flow (row 0 = source, row 1 = target); the CSR rows are targets.
    ei = torch.from_numpy(np.stack([coo.col[off], coo.row[off]]).astype(np.int64)).to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        adj_t = torch.sparse_csr_tensor(
            torch.from_numpy(sub.indptr.astype(np.int64)), torch.from_numpy(sub.indices.astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)), (m, m), dtype=torch.float32, check_invariants=False,
        ).to(device)
    return GraphContext(edge_index=ei, n_nodes=m, adj_norm=adj_t)


def make_partitions(
    coords: np.ndarray, edge_index: np.ndarray, n_nodes: int, partition_size: int, hops: int, device: Any = "cpu"
) -> list[Partition]:
    """Cut the section into grid partitions of about ``partition_size`` core spots plus a ``hops``-hop halo."""
    adj = normalised_adjacency(edge_index, n_nodes)
    ids = grid_partition(coords, partition_size)
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    parts = []
    for core in np.split(order, bounds):
        core = np.sort(core).astype(np.int64)
        nodes = np.concatenate([core, halo(adj, core, hops)])
        parts.append(Partition(nodes=nodes, n_core=len(core), ctx=_sub_context(adj, nodes, device)))
    return parts


# --------------------------------------------------------------------------------------------- receptive field
def receptive_hops(fusion: Any, model: Any) -> int:
    """Graph hops from the input features to the model's outputs (an upper bound is safe, just larger halos).

    A component may declare ``receptive_hops``; otherwise the graph model counts one hop per graph layer it
    holds (for the VGAE that counts both μ and log-variance heads: one more than the longest path), and the
    attention fusion one hop with ``scope = neighbourhood``.
    """
    def declared(obj: Any) -> int | None:
        v = getattr(obj, "receptive_hops", None)
        return int(v() if callable(v) else v) if v is not None else None

    f = declared(fusion)
    if f is None:
        scope = getattr(getattr(fusion, "params", None), "scope", None)
        if scope == "global":
            raise SpecError(
                "mini-batch training cannot split global attention (every spot attends to every other); use "
                "--set fusion.scope=neighbourhood, or --set train.batch=full"
            )
        f = 1 if scope == "neighbourhood" else 0
    m = declared(model)
    if m is None:
        m = sum(1 for mod in model.modules() if _is_graph_layer(mod))
    return f + m


def _is_graph_layer(mod: Any) -> bool:
    """The bundled graph layers (``stmm_graph.layers``): GCN, and the GAT/SAGE wrappers of PyG layers."""
    return type(mod).__name__ in ("SparseGCNConv", "GATLayer", "SAGELayer")


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
) -> list[dict[str, float]]:
    """Train for ``epochs`` passes over ``parts``; return one dict of loss terms per epoch (weighted means).

    The partition order is shuffled each epoch (seeded) when the optimiser steps per partition.
    """
    import torch

    from stmm_core.distributed import context as dist_ctx

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
        # one noise draw per spot and epoch, shared by every partition the spot appears in (core or halo), as in
        # full-batch training; without it a halo spot gets a different sample in each partition
        latent = getattr(model, "latent_dim", None)
        noise = torch.randn(t_gene.shape[0], int(latent), device=device) if latent else None
        for i in order:
            part = parts[int(i)]
            idx = torch.from_numpy(part.nodes).to(device)
            part.ctx.noise = None if noise is None else noise.index_select(0, idx)
            img = None if t_img is None else t_img.index_select(0, idx)
            gene = t_gene.index_select(0, idx)
            if not accumulate:
                opt.zero_grad(set_to_none=True)
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
    """The partition branch of :func:`stmm_core.pipeline.graph_fusion.fit_graph_fusion`.

    Resolves ``train.batch``; returns ``(None, [])`` when the run should stay full batch, else trains over
    partitions and returns the embedding ``(N, L)`` float32 and the per-epoch history. Fills ``info["batch"]``.
    """
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
    hops = receptive_hops(fusion, model)
    parts = make_partitions(section.coords, graph.edge_index, section.n_spots, tr.partition_size, hops,
                            t_gene.device)
    sizes = np.array([pt.n_nodes for pt in parts])
    binfo.update(partitions=len(parts), hops=hops, partition_size=tr.partition_size, accumulate=tr.accumulate,
                 max_partition_nodes=int(sizes.max()), halo_fraction=round(float(sizes.sum()) / section.n_spots - 1, 4))
    log.info("training over %d partitions (%d-hop halo, largest %d spots)", len(parts), hops, sizes.max())
    with progress_bar(total=tr.epochs, desc=f"train ({len(parts)} partitions)", unit="epoch",
                      enabled=progress) as bar:
        def on_epoch(epoch: int, rec: dict[str, float]) -> None:
            bar.update(1)
            if epoch % 20 == 0:
                bar.set_postfix(loss=f"{rec['loss']:.4f}")

        history = train_partitioned(fusion, model, t_img, t_gene, target, parts, opt, params, epochs=tr.epochs,
                                    grad_clip=tr.grad_clip, accumulate=tr.accumulate, seed=tr.seed, lr=tr.lr,
                                    on_epoch=on_epoch)
    return embed_partitioned(fusion, model, t_img, t_gene, parts), history
