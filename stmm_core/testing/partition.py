"""Partition training against full batch: one training step's loss and gradient, compared.

    from stmm_core.testing.partition import compare_partition_step
    diff = compare_partition_step(fusion, model, img, gene, target, coords, edge_index, partition_size=150)
    assert diff["loss_rel"] < 1e-5 and diff["grad_rel"] < 1e-5

The partition side runs the real trainer (:func:`stmm_core.pipeline.minibatch.train_partitioned`, one epoch,
gradients accumulated, the optimiser step left out), the full-batch side the graph-fusion runner's step
(one forward on the whole graph, loss, backward), both from the same random state: a graph model that declares
itself exact (:class:`stmm_core.interfaces.PartitionSupport`) must give the same loss and gradient. Used by the
tests of every bundled graph model and by ``benchmarks/partition_exactness.py``; a third-party model can run it
on its own components.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _NoStep:
    """An optimiser stand-in: clears gradients, never steps (so the accumulated gradient can be read)."""

    def __init__(self, params: list[Any]) -> None:
        self.params = params

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        pass


def _grads(params: list[Any]) -> list[Any]:
    import torch

    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def compare_partition_step(
    fusion: Any, model: Any, img: Any, gene: Any, target: Any, coords: np.ndarray, edge_index: np.ndarray, *,
    partition_size: int, hops: int | None = None, seed: int = 0, covariates: Any = None,
) -> dict[str, Any]:
    """Loss and gradient of one training step, full batch vs accumulated over partitions.

    ``fusion``/``model`` set up, in training mode for the step; ``img`` ``(N, D_img)`` or None, ``gene``
    ``(N, D_gene)``, ``target`` ``(N, D_t)``; ``coords`` ``(N, 2)``; ``edge_index`` ``(2, E)`` numpy. ``hops``:
    halo width (default: what the components declare). Returns ``loss_full``, ``loss_partition``, ``loss_rel``
    (relative difference), ``grad_rel`` (L2 norm of the gradient difference over all parameters / the full-batch
    gradient norm), ``grad_rel_tensor`` (the largest such ratio of one parameter tensor, among tensors whose
    gradient is not negligible: above 1e-6 of the global norm), ``grad_abs`` (largest absolute entry difference), ``grad_norm`` (full-batch global
    norm), ``partitions`` and ``hops``. ``covariates`` ``(N, C)``: the decoder covariates of a model that asks for
    them (default: standard-normal draws from ``seed``), given to the full graph and to each partition's rows.
    """
    import torch

    from stmm_core.interfaces import GraphContext
    from stmm_core.pipeline.covariates import model_covariates
    from stmm_core.pipeline.minibatch import (make_partitions, partition_plan, set_partition_covariates,
                                              train_partitioned)

    plan = partition_plan(fusion, model)
    hops = plan.hops if hops is None else int(hops)
    n = int(gene.shape[0])
    n_cov = len(model_covariates(model))
    if covariates is None and n_cov:
        covariates = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, n_cov)).astype(np.float32))
    params = [p for p in list(fusion.parameters()) + list(model.parameters()) if p.requires_grad]
    fusion.train()
    model.train()

    # full batch, as the graph-fusion runner's step
    for p in params:
        p.grad = None
    ei = np.asarray(edge_index)
    xy = np.asarray(coords, dtype=np.float64)
    ctx = GraphContext(edge_index=torch.as_tensor(ei, dtype=torch.long), n_nodes=n,
                       distances=torch.from_numpy(np.linalg.norm(xy[ei[0]] - xy[ei[1]], axis=1).astype(np.float32)),
                       covariates=covariates)
    torch.manual_seed(seed)
    terms = model.loss(model(fusion(img, gene, ctx), ctx), target)
    terms["loss"].backward()
    full = _grads(params)
    loss_full = float(terms["loss"].detach())

    # partitions, through the real trainer (one epoch, accumulated, no optimiser step)
    parts = make_partitions(coords, edge_index, n, partition_size, hops)
    set_partition_covariates(parts, covariates)
    torch.manual_seed(seed)
    hist = train_partitioned(fusion, model, img, gene, target, parts, _NoStep(params), params, epochs=1,
                             grad_clip=None, accumulate=True, seed=seed, lr=0.0, plan=plan)
    parted = _grads(params)
    loss_part = float(hist[0]["loss"])
    for p in params:
        p.grad = None

    def norm(gs: list[Any]) -> float:
        return float(torch.sqrt(sum(((g.double() ** 2).sum() for g in gs), torch.zeros((), dtype=torch.float64))))

    g_norm = norm(full)
    per_tensor = [float((a - b).norm() / b.norm()) for a, b in zip(parted, full) if float(b.norm()) > 1e-6 * g_norm]
    return {
        "loss_full": loss_full, "loss_partition": loss_part,
        "loss_rel": abs(loss_part - loss_full) / max(abs(loss_full), 1e-30),
        "grad_rel": norm([a - b for a, b in zip(parted, full)]) / max(g_norm, 1e-30),
        "grad_rel_tensor": max(per_tensor, default=0.0),
        "grad_abs": max((float((a - b).abs().max()) for a, b in zip(parted, full)), default=0.0),
        "grad_norm": g_norm, "partitions": len(parts), "hops": hops,
    }
