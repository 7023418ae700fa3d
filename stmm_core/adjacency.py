"""Sparse adjacency matrices of a spatial graph as torch CSR tensors (shared by graph layers and models).

Every matrix here has one entry per (target, source) pair of the graph plus one self loop per node, rows =
targets (PyG flow: ``edge_index[0]`` = source, ``edge_index[1]`` = target), so ``adj @ x`` aggregates each
node's sources. The layers differ only in the values (symmetric GCN normalisation, GraphST's, row means).
torch is imported lazily: this module is importable at CLI start-up.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def self_loop_structure(edge_index: "torch.Tensor", n: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """``(row, col, counts)`` of ``A + I``: coalesced entries sorted by (row, col) and the entries per row.

    Self loops and duplicates in ``edge_index`` ``(2, E)`` are dropped before one self loop per node is added, so
    ``counts - 1`` is each node's number of distinct neighbours.
    """
    import torch

    ei = edge_index.to(dtype=torch.long)
    keep = ei[0] != ei[1]
    loops = torch.arange(n, device=ei.device, dtype=torch.long)
    row = torch.cat([ei[1][keep], loops])
    col = torch.cat([ei[0][keep], loops])
    key = torch.unique(row * n + col)  # coalesced and sorted by (row, col)
    row, col = key // n, key % n
    return row, col, torch.bincount(row, minlength=n)


def csr_from_structure(counts: "torch.Tensor", col: "torch.Tensor", values: "torch.Tensor", n: int) -> "torch.Tensor":
    """float32 sparse CSR ``(n, n)`` from :func:`self_loop_structure`'s ``counts`` and ``col`` and one value per entry."""
    import torch

    crow = torch.zeros(n + 1, dtype=torch.long, device=col.device)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), dtype=torch.float32, device=col.device,
                                       check_invariants=False)


def given_degree(degree: "torch.Tensor | None", n: int, device: "torch.device") -> "torch.Tensor | None":
    """``degree`` (each node's neighbours in the WHOLE graph, self excluded) as float32 ``(n,)`` on ``device``."""
    import torch

    if degree is None:
        return None
    given = degree.to(device=device, dtype=torch.float32).reshape(-1)
    if given.numel() != n:
        raise ValueError(f"degree has {given.numel()} entries for {n} nodes")
    return given


def mean_adjacency(edge_index: "torch.Tensor", n: int, degree: "torch.Tensor | None" = None) -> "torch.Tensor":
    """``(D + I)^-1 (A + I)``: each node's mean over itself and its neighbours, float32 sparse CSR ``(n, n)``.

    ``degree``: the whole graph's neighbour counts for a partition's subgraph (whose halo nodes lost their outer
    edges, so they are averaged with the weights of the whole graph); None = counted in ``edge_index``.
    """
    row, col, counts = self_loop_structure(edge_index, n)
    deg = given_degree(degree, n, row.device)
    if deg is None:
        deg = (counts - 1).float()
    return csr_from_structure(counts, col, (1.0 / (deg + 1.0))[row], n)
