"""Spatial partitions with an exact k-hop halo, and the partition capability components declare.

A section is cut into square grid cells of about ``partition_size`` spots (the *core* of a partition); each core
is extended by a halo of all spots within ``h`` graph hops, where ``h`` is the receptive field the fusion and
the graph model declare (:class:`stmm_core.interfaces.PartitionSupport`). A partition's subgraph is cut from
the *globally normalised* adjacency ``D^-1/2 (A+I) D^-1/2`` and carries the whole graph's degrees
(``GraphContext.degree``), so for every core spot each layer sees exactly the neighbours and weights it sees
in the full graph, whatever normalisation it uses.

A component that declares nothing cannot be trained over partitions (:func:`partition_plan` refuses it with
one message saying how to declare it, or how to turn partition mode off). The core never guesses a receptive
field from layer class names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp
    import torch

    from stmm_core.interfaces import GraphContext, PartitionSupport


@dataclass
class Partition:
    """One partition: ``nodes`` = core spots first (``n_core`` of them), then the halo; ``ctx`` its subgraph.

    ``adj`` is the whole section's normalised adjacency (shared by all partitions, not a copy).
    """

    nodes: np.ndarray  # int64 (n_core + n_halo,)
    n_core: int
    ctx: "GraphContext"
    adj: "sp.csr_matrix | None" = None

    @property
    def n_nodes(self) -> int:
        return int(len(self.nodes))


# --------------------------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class PartitionPlan:
    """What partition training needs to know of a fusion + graph model pair (from their declarations)."""

    fusion_hops: int
    model_hops: int
    exact: bool
    reasons: tuple[str, ...] = ()
    noise: bool = False
    negatives: bool = False

    @property
    def hops(self) -> int:
        """Halo width: the fusion's hops plus the graph model's."""
        return self.fusion_hops + self.model_hops

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``metrics.json``."""
        out: dict[str, Any] = {"hops": self.hops, "fusion_hops": self.fusion_hops, "model_hops": self.model_hops,
                               "exact": self.exact}
        if self.reasons:
            out["inexact_because"] = list(self.reasons)
        return out


def declared_support(component: Any, role: str, name: str | None = None) -> "PartitionSupport":
    """The :class:`PartitionSupport` a component declares; one clear error when it declares none or refuses."""
    cls = type(component)
    label = f"{role} {name!r}" if name else f"{role} {cls.__name__}"
    fn = getattr(cls, "partition_support", None)
    support = fn(getattr(component, "params", None)) if callable(fn) else None
    if support is None:
        raise SpecError(
            f"the {label} ({cls.__module__}.{cls.__qualname__}) does not declare whether it can be trained over "
            "spatial partitions, so partition (mini-batch) training cannot run: use --set train.batch=full, or "
            "declare it in the component, a classmethod partition_support(params) returning "
            "stmm_core.interfaces.PartitionSupport(hops=<graph hops it looks across>, exact=<True if partitions "
            "reproduce the full-batch loss and gradient>)"
        )
    if support.hops is None:
        raise SpecError(f"the {label} cannot be trained over spatial partitions ({support.reason or 'declared'}); "
                        "or use --set train.batch=full")
    if int(support.hops) < 0:
        raise SpecError(f"the {label} declares a negative receptive field ({support.hops} hops)")
    return support


def partition_plan(fusion: Any, model: Any, names: dict[str, str] | None = None) -> PartitionPlan:
    """Combine the fusion's and the graph model's declarations (``names``: slot → catalogue name, for messages)."""
    names = names or {}
    f = declared_support(fusion, "fusion", names.get("fusion"))
    m = declared_support(model, "graph model", names.get("graph"))
    reasons = tuple(f"{role}: {s.reason or 'declared inexact'}" for role, s in (("fusion", f), ("graph model", m))
                    if not s.exact)
    if m.negatives and not callable(getattr(model, "negative_permutation", None)):
        raise SpecError(f"the graph model {names.get('graph') or type(model).__name__} declares negatives=True but "
                        "has no negative_permutation(n, device) method")
    return PartitionPlan(fusion_hops=int(f.hops), model_hops=int(m.hops), exact=f.exact and m.exact,
                         reasons=reasons, noise=m.noise, negatives=m.negatives)


def receptive_hops(fusion: Any, model: Any) -> int:
    """Graph hops from the input features to the model's loss: the declared fusion hops plus model hops."""
    return partition_plan(fusion, model).hops


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
    """``D^-1/2 (A+I) D^-1/2`` as scipy CSR float32 (the values of the GCN layer's ``build_adj_norm``)."""
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


def sub_context(adj: "sp.csr_matrix", nodes: np.ndarray, device: Any) -> "GraphContext":
    """GraphContext of the subgraph on ``nodes``: rows/columns of the global normalisation (not renormalised),
    and the whole graph's degrees (``degree``) for layers that normalise differently."""
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
    degree = (np.diff(adj.indptr)[nodes] - 1).astype(np.float32)  # every row of adj holds one self loop
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        adj_t = torch.sparse_csr_tensor(
            torch.from_numpy(sub.indptr.astype(np.int64)), torch.from_numpy(sub.indices.astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)), (m, m), dtype=torch.float32, check_invariants=False,
        ).to(device)
    return GraphContext(edge_index=ei, n_nodes=m, adj_norm=adj_t, degree=torch.from_numpy(degree).to(device))


def _edge_lengths(coords: np.ndarray, nodes: np.ndarray, edge_index: "torch.Tensor") -> "torch.Tensor":
    """``(E,)`` float32 lengths of a subgraph's edges (local ids into ``nodes``), as the graph builders give them."""
    import torch

    ei = edge_index.cpu().numpy()
    xy = np.asarray(coords, dtype=np.float64)
    d = np.linalg.norm(xy[nodes[ei[0]]] - xy[nodes[ei[1]]], axis=1).astype(np.float32)
    return torch.from_numpy(d).to(edge_index.device)


def make_partitions(
    coords: np.ndarray, edge_index: np.ndarray, n_nodes: int, partition_size: int, hops: int, device: Any = "cpu",
    rank: np.ndarray | None = None,
) -> list[Partition]:
    """Cut the section into grid partitions of about ``partition_size`` core spots plus a ``hops``-hop halo.

    ``rank``: the graph's :attr:`SpatialGraph.rank` (or None), carried to each partition's edges.
    """
    adj = normalised_adjacency(edge_index, n_nodes)
    picked = None
    if rank is not None:  # (source, target) -> rank + 1 of the ranked edges; 0 = not ranked
        import scipy.sparse as sp

        r = np.asarray(rank)
        ok = r >= 0
        picked = sp.csr_matrix((r[ok].astype(np.float64) + 1, (edge_index[0][ok], edge_index[1][ok])),
                               shape=(n_nodes, n_nodes))
    ids = grid_partition(coords, partition_size)
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    parts = []
    for core in np.split(order, bounds):
        core = np.sort(core).astype(np.int64)
        nodes = np.concatenate([core, halo(adj, core, hops)])
        ctx = sub_context(adj, nodes, device)
        ctx.distances = _edge_lengths(coords, nodes, ctx.edge_index)  # for read-outs over the nearest neighbours
        if picked is not None:
            import torch

            ei = ctx.edge_index.cpu().numpy()
            sub_rank = np.asarray(picked[nodes[ei[0]], nodes[ei[1]]]).ravel() - 1
            ctx.rank = torch.from_numpy(sub_rank.astype(np.int16)).to(ctx.edge_index.device)
        parts.append(Partition(nodes=nodes, n_core=len(core), ctx=ctx, adj=adj))
    return parts


def fused_rows(
    fusion: Any, t_img: "torch.Tensor | None", t_gene: "torch.Tensor", rows: np.ndarray, adj: "sp.csr_matrix",
    hops: int, device: Any,
) -> "torch.Tensor":
    """Fusion output ``(len(rows), D)`` at the distinct spots ``rows`` (global ids, any order), each computed
    with its ``hops``-hop halo on the whole graph: the rows the full-batch fusion output has there."""
    import torch

    rows = np.asarray(rows, dtype=np.int64)
    nodes = rows if hops == 0 else np.concatenate([rows, halo(adj, rows, hops)])
    ctx = sub_context(adj, nodes, device)
    idx = torch.from_numpy(nodes).to(device)
    img = None if t_img is None else t_img.index_select(0, idx)
    return fusion(img, t_gene.index_select(0, idx), ctx)[: len(rows)]
