"""Consensus of several domain labellings (one per seed): label alignment, majority vote, per-spot agreement.

Domain ids are arbitrary per fit (domain 3 of seed 0 may be domain 5 of seed 1). Each labelling is aligned to a
reference by Hungarian matching on co-membership (the contingency table: how many spots the two labels share,
:func:`scipy.optimize.linear_sum_assignment`), the aligned labels are voted spot by spot, and the labellings are
re-aligned to the vote until it no longer changes. The reference starts as the medoid seed (highest mean ARI
to the others), so the consensus does not depend on the order of the seeds.

Which seeds a consensus uses: :func:`consensus_seeds` (seed ``s`` of an ``n``-seed consensus fits seeds
``s*n … s*n+n-1``, so consensus runs with different seeds never share a fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def consensus_seeds(seed: int, n: int) -> list[int]:
    """The single-fit seeds behind consensus seed *seed* with *n* members: ``seed*n … seed*n + n - 1``.

    Raises :class:`~stmm_core.errors.StmmError` naming ``--seed`` and ``--consensus`` when the last one would pass
    the largest seed (2**32 - 1)."""
    from stmm_core.errors import StmmError

    if n > 1 and seed * n + n - 1 > 2**32 - 1:
        raise StmmError(f"--seed {seed} with --consensus {n} fits seeds {seed}×{n} … {seed}×{n}+{n - 1}, past the "
                        f"largest seed {2**32 - 1}; use --seed at most {(2**32 - n) // n}")
    return [seed * n + i for i in range(n)] if n > 1 else [seed]


@dataclass
class Consensus:
    """A consensus labelling and how much its members agree."""

    labels: np.ndarray  # (N,) int64, ids 0..K-1 ordered by size (largest first)
    confidence: np.ndarray  # (N,) float32: fraction of members whose aligned label equals the consensus
    aligned: np.ndarray  # (n, N) int64: each member's labels renamed to the consensus ids
    pairwise_ari: np.ndarray  # (n, n) ARI between members (diagonal 1)
    member_ari: np.ndarray  # (n,) ARI of each member against the consensus
    iterations: int = 0
    info: dict = field(default_factory=dict)

    @property
    def seed_ari_mean(self) -> float:
        """Mean seed-to-seed ARI over the pairs of members (1.0 with a single member)."""
        n = self.pairwise_ari.shape[0]
        if n < 2:
            return 1.0
        return float(self.pairwise_ari[np.triu_indices(n, 1)].mean())

    @property
    def seed_ari_min(self) -> float:
        n = self.pairwise_ari.shape[0]
        if n < 2:
            return 1.0
        return float(self.pairwise_ari[np.triu_indices(n, 1)].min())

    @property
    def representative(self) -> int:
        """Index of the member closest to the consensus (its embedding and weights stand for the run)."""
        return int(np.argmax(self.member_ari))

    def summary(self, seeds: Sequence[int] | None = None) -> dict:
        """The metrics.json block: members, seed-to-seed ARI (mean, min), agreement."""
        out = {
            "n": int(self.aligned.shape[0]),
            "seed_ari_mean": self.seed_ari_mean,
            "seed_ari_min": self.seed_ari_min,
            "member_ari_to_consensus": [float(a) for a in self.member_ari],
            "mean_confidence": float(self.confidence.mean()),
            "spots_all_agree": float((self.confidence >= 1.0 - 1e-6).mean()),
            "representative": self.representative,
            "iterations": self.iterations,
        }
        if seeds is not None:
            out["seeds"] = [int(s) for s in seeds]
            out["representative_seed"] = int(seeds[self.representative])
        return out


def _dense(labels: np.ndarray) -> np.ndarray:
    """Ids 0..m-1 (sorted distinct values, as np.unique orders them)."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.astype(np.int64).ravel()


def align_to(reference: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Rename *labels* (dense ids) to the ids of *reference* (0..k-1) that maximise the spots they share.

    A label left unmatched (it has more distinct values than the reference) keeps a fresh id ≥ k, so it never
    votes for a consensus domain."""
    from scipy.optimize import linear_sum_assignment

    labels = _dense(labels)
    m = int(labels.max()) + 1
    table = np.zeros((m, k), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.arange(k, k + m, dtype=np.int64)  # unmatched → fresh ids
    mapping[rows] = cols
    return mapping[labels]


def _vote(aligned: np.ndarray, k: int, tie: np.ndarray) -> np.ndarray:
    """Per-spot majority over the aligned members (ids ≥ k do not vote); ties go to *tie*'s label."""
    n_spots = aligned.shape[1]
    counts = np.zeros((n_spots, k), dtype=np.float64)
    for row in aligned:
        ok = row < k
        np.add.at(counts, (np.nonzero(ok)[0], row[ok]), 1.0)
    ok = tie < k
    counts[np.nonzero(ok)[0], tie[ok]] += 0.5  # strictly less than one vote: only breaks ties
    return counts.argmax(axis=1).astype(np.int64)


def consensus_labels(members: Sequence[np.ndarray], max_iter: int = 20) -> Consensus:
    """Consensus of *members* (each (N,) integer or string labels of the same spots).

    K of the consensus is the largest number of distinct labels among the members; the returned ids are
    0..K-1 ordered by domain size (largest first)."""
    runs = [_dense(m) for m in members]
    if not runs:
        raise ValueError("consensus of no labellings")
    n_spots = runs[0].shape[0]
    if any(r.shape[0] != n_spots for r in runs):
        raise ValueError("all labellings must cover the same spots")
    n = len(runs)
    pair = _pairwise_ari(runs)
    ref_idx = int(np.argmax(pair.sum(axis=1))) if n > 1 else 0
    k = max(int(r.max()) + 1 for r in runs)
    current = runs[ref_idx]
    tie = current
    it = 0
    aligned = np.stack([align_to(current, r, k) for r in runs])
    for it in range(1, max_iter + 1):
        vote = _vote(aligned, k, tie)
        if np.array_equal(vote, current):
            break
        current = vote
        tie = vote
        aligned = np.stack([align_to(current, r, k) for r in runs])
    cons = _finish(current, runs, k, pair)
    cons.iterations = it
    cons.info.update({"reference": ref_idx, "mode": "vote"})
    return cons


def _pairwise_ari(runs: Sequence[np.ndarray]) -> np.ndarray:
    from sklearn.metrics import adjusted_rand_score

    n = len(runs)
    pair = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            pair[i, j] = pair[j, i] = adjusted_rand_score(runs[i], runs[j])
    return pair


def _finish(current: np.ndarray, runs: Sequence[np.ndarray], k: int, pair: np.ndarray) -> Consensus:
    """Ids by size (largest first, stable), each member aligned to them, per-spot agreement, member ARIs."""
    from sklearn.metrics import adjusted_rand_score

    aligned = np.stack([align_to(current, r, k) for r in runs])
    sizes = np.bincount(current, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    rename = np.empty(k, dtype=np.int64)
    rename[order] = np.arange(k)
    labels = rename[current]
    aligned_out = np.where(aligned < k, rename[np.minimum(aligned, k - 1)], aligned)
    confidence = (aligned_out == labels[None, :]).mean(axis=0).astype(np.float32)
    member_ari = np.array([adjusted_rand_score(labels, r) for r in runs])
    return Consensus(labels=labels, confidence=confidence, aligned=aligned_out, pairwise_ari=pair,
                     member_ari=member_ari, info={"k": k})


def agreement(labels: np.ndarray, members: Sequence[np.ndarray]) -> Consensus:
    """A given consensus labelling (e.g. from the members' joint embedding) with the members' agreement: each
    member aligned to it by Hungarian matching, the per-spot confidence and the seed-to-seed ARI, as
    :func:`consensus_labels` reports them."""
    runs = [_dense(m) for m in members]
    if not runs:
        raise ValueError("agreement with no labellings")
    current = _dense(labels)
    if any(r.shape[0] != current.shape[0] for r in runs):
        raise ValueError("all labellings must cover the same spots")
    k = max([int(current.max()) + 1] + [int(r.max()) + 1 for r in runs])
    return _finish(current, runs, k, _pairwise_ari(runs))
