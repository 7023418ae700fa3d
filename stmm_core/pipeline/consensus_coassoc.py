"""Co-association consensus: cluster the spots by how often the seeds put them together (evidence accumulation).

``domains.consensus_mode = "coassoc"`` (with ``domains.consensus = N``): the co-association of two spots is the
fraction of the N members (seeds) that give them the same domain. The consensus is a spectral clustering of that
similarity: the K leading eigenvectors of the normalised co-association ``D^-1/2 C D^-1/2`` (``D``: row sums),
rows scaled to unit length, k-means into K domains (Ng, Jordan & Weiss 2002), then the spec's spatial refinement
(``domains.refine_neighbors``), as every fit's labels get.

Unlike the vote, no member is a reference and no label has to be matched to another's: a spot is placed by its
co-membership with all other spots over all members, so a minority solution still pulls the spots it separates
well, and a split or merge made by one member does not carry a whole domain. ``C = H Hᵀ / N`` with ``H`` the
members' one-hot labels side by side ``(spots, ΣK)``, so the eigenvectors come from a thin SVD of the scaled
``H`` and the N×N matrix is never formed: time and memory grow linearly with the spots.

The per-spot confidence and the seed-to-seed agreement are those of the members' own labels aligned to the result
(:func:`stmm_core.pipeline.consensus.agreement`), as in the vote. Measured on DLPFC: ``benchmarks/CONSENSUS.md``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.pipeline.consensus import Consensus


def onehot_stack(members: Sequence[np.ndarray]) -> np.ndarray:
    """The members' labels as one-hot columns side by side ``(N, ΣK_i)``, each member scaled by ``1/sqrt(n)``
    so that ``H Hᵀ`` is the co-association (fraction of members giving two spots the same label)."""
    if not members:
        raise ValueError("co-association of no labellings")
    n_spots = np.asarray(members[0]).shape[0]
    scale = 1.0 / np.sqrt(len(members))
    cols = []
    for m in members:
        m = np.asarray(m)
        if m.ndim != 1 or m.shape[0] != n_spots:
            raise ValueError(f"all labellings must be (N,) over the same {n_spots} spots, got {m.shape}")
        _, inv = np.unique(m, return_inverse=True)
        inv = inv.reshape(-1)
        h = np.zeros((n_spots, int(inv.max()) + 1))
        h[np.arange(n_spots), inv] = scale
        cols.append(h)
    return np.hstack(cols)


def coassociation_coordinates(members: Sequence[np.ndarray], k: int) -> np.ndarray:
    """``(N, k)`` spectral coordinates of the co-association: the k leading eigenvectors of ``D^-1/2 C D^-1/2``
    with unit-length rows. Eigenvectors of eigenvalue 0 are left out (fewer than k columns when the members hold
    fewer than k groups of spots between them: no arbitrary split of a group)."""
    h = onehot_stack(members)
    degree = h @ h.sum(axis=0)  # row sums of C = H Hᵀ; > 0, every spot is with itself in every member
    u, sv, _ = np.linalg.svd(h / np.sqrt(degree)[:, None], full_matrices=False)
    u = u[:, sv > 1e-9 * sv[0]][:, :k]
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    return u / np.where(norm > 0, norm, 1.0)


def consensus_coassoc(members: Sequence[np.ndarray], n_domains: int, seed: int = 0,
                      coords: np.ndarray | None = None, refine_neighbors: int = 0,
                      n_init: int = 20) -> "Consensus":
    """Spectral clustering of the members' co-association into *n_domains* (k-means with *n_init* restarts,
    ``random_state=seed``), then the spatial refinement over *refine_neighbors* spots when *coords* are given;
    returned with the members' agreement (:func:`stmm_core.pipeline.consensus.agreement`)."""
    from sklearn.cluster import KMeans

    from stmm_core.pipeline.consensus import agreement
    from stmm_core.pipeline.refine import refine_labels

    if int(n_domains) < 1:
        raise ValueError(f"the number of domains must be at least 1, got {n_domains}")
    x = coassociation_coordinates(members, int(n_domains))
    with warnings.catch_warnings():  # fewer distinct groups than K among the members: fewer domains, as in the vote
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        labels = KMeans(n_clusters=int(n_domains), n_init=n_init, random_state=seed).fit_predict(x)
    labels = np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)  # ids 0..K'-1
    if coords is not None and refine_neighbors > 1:
        labels = refine_labels(coords, labels, refine_neighbors)
    cons = agreement(labels, members)
    cons.info["mode"] = "coassoc"
    return cons
