"""Embedding-level consensus: cluster the members' embeddings side by side instead of voting their labels.

``domains.consensus_mode = "embedding"`` (with ``domains.consensus = N``): each of the N seeds' embeddings
``(n_spots, L)`` is centred and scaled to unit total variance (so every member weighs the same), the N are put
side by side ``(n_spots, N·L)``, and the spec's own task (e.g. PCA → Gaussian mixture) and spatial refinement
cluster that joint embedding once. The Gaussian mixture starts from its own k-means restarts *and* from each
member's labels and their vote, and keeps the fit of highest likelihood: the seeds land on a few distinct
solutions, and this picks among them by one criterion of the data (the likelihood on all seeds' embeddings)
instead of by which solution holds the majority of the seeds drawn (the lottery of the vote). The per-spot confidence and the seed-to-seed agreement are those of the
members' own labels aligned to the result (:func:`stmm_core.pipeline.consensus.agreement`), as in the vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.pipeline.consensus import Consensus
    from stmm_core.spec import PipelineSpec


def joint_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The members' embeddings side by side ``(N, sum L_i)``, each centred and scaled to unit total variance."""
    if not embeddings:
        raise ValueError("joint embedding of no members")
    n = np.asarray(embeddings[0]).shape[0]
    parts = []
    for e in embeddings:
        x = np.asarray(e, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"all member embeddings must be (N, L) over the same {n} spots, got {x.shape}")
        x = x - x.mean(axis=0)
        scale = float(np.sqrt((x ** 2).sum() / n))
        parts.append(x / scale if scale > 0 else x)
    return np.hstack(parts).astype(np.float32)


def cluster_embedding(spec: "PipelineSpec", embedding: np.ndarray, n_domains: int, seed: int,
                      coords: np.ndarray | None, starts: Sequence[np.ndarray] = (),
                      info: dict | None = None) -> np.ndarray:
    """The spec's task on *embedding*, then its spatial refinement (``domains.refine_neighbors``) → int64 labels.

    *starts*: labellings the task may start from besides its own initialisation (a task with
    ``run_with_starts``, e.g. the Gaussian mixture, keeps the fit of highest likelihood); ignored otherwise."""
    from stmm_core.pipeline_base import build_component
    from stmm_core.pipeline.refine import refine_labels

    task = build_component(spec, "task")
    if len(starts) and hasattr(task, "run_with_starts"):
        labels = np.asarray(task.run_with_starts(embedding, n_domains, seed, starts=starts), dtype=np.int64)
    else:
        labels = np.asarray(task.run(embedding, n_domains, seed), dtype=np.int64)
    if info is not None:
        info.update(getattr(task, "last_info", {}) or {})
    if coords is not None and spec.domains.refine_neighbors > 1:
        labels = refine_labels(coords, labels, spec.domains.refine_neighbors)
    return labels


def consensus_embedding(spec: "PipelineSpec", embeddings: Sequence[np.ndarray], member_labels: Sequence[np.ndarray],
                        n_domains: int, seed: int, coords: np.ndarray | None) -> "Consensus":
    """Cluster the joint embedding of the members (:func:`joint_embedding`) with the spec's task + refinement and
    report how the members' own labels agree with it.

    The task starts from its own initialisation and, where it can (the Gaussian mixture), also from each member's
    labels and from their vote; the fit of highest likelihood is kept. So the result is the best-likelihood
    mixture on the joint embedding among the solutions the seeds found, not whichever solution most seeds share."""
    from stmm_core.pipeline.consensus import agreement, consensus_labels

    starts = [np.asarray(m) for m in member_labels]
    if len(starts) > 1:
        starts.append(consensus_labels(starts).labels)
    task_info: dict = {}
    labels = cluster_embedding(spec, joint_embedding(embeddings), n_domains, seed, coords, starts=starts,
                               info=task_info)
    cons = agreement(labels, member_labels)
    cons.info["mode"] = "embedding"
    if "start" in task_info:
        won = task_info["start"]
        cons.info["start"] = won if won == "restarts" else ("vote" if won == len(member_labels) else f"member {won}")
        cons.info["lower_bound"] = task_info.get("lower_bound")
    return cons
