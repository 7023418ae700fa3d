"""Feature-level informative-image bench: image features whose information about the domains is dialled.

For a section with ground-truth domains (one-hot ``H``, ``(N, K)``) and real per-spot encoder features
``R`` ``(N, D)``, the bench features at signal ratio ``s`` are::

    S = standardise(H · P + E)         P ~ N(0, 1) (K × D) a random projection, E ~ N(0, σ²) (N × D)
    X = standardise(R) + s · S

``σ`` is set so the informative block alone has a fixed per-feature signal-to-noise ratio ``block_snr``
(``var(H P) / σ²``, default 1); ``s`` (the swept ratio) is the amplitude of that block relative to the real
features (unit variance per column after z-scoring): ``s = 0`` returns the real features unchanged (the
section as it is), larger ``s`` makes the image increasingly informative. Everything after the features
(z-score + PCA, fusion, graph model, clustering) is the pipeline's own, unchanged: ``X`` is handed to
:func:`stmm_graph_fusion.fit.fit_graph_fusion` as precomputed ``image_features``.

Spots without a label get a zero one-hot row (no signal, only noise), so they are not given away.
"""

from __future__ import annotations

import numpy as np


def one_hot(labels: np.ndarray) -> np.ndarray:
    """``(N, K)`` float64 one-hot of the labelled spots (missing labels: NaN/None/'' → an all-zero row)."""
    lab = np.asarray(labels, dtype=object)
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) or str(v) in ("", "nan") for v in lab])
    cats = sorted({str(v) for v, m in zip(lab, missing) if not m})
    index = {c: i for i, c in enumerate(cats)}
    h = np.zeros((len(lab), len(cats)), dtype=np.float64)
    for i, (v, m) in enumerate(zip(lab, missing)):
        if not m:
            h[i, index[str(v)]] = 1.0
    return h


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std(0, keepdims=True)
    sd[sd < 1e-12] = 1.0
    return (x - x.mean(0, keepdims=True)) / sd


def informative_features(real: np.ndarray, labels: np.ndarray, ratio: float, *, seed: int = 0,
                         block_snr: float = 1.0) -> np.ndarray:
    """Real features with a label-informative block mixed in at amplitude ``ratio`` (module docstring).

    Args:
        real: ``(N, D)`` real encoder features. labels: ``(N,)`` ground-truth domains (missing allowed).
        ratio: amplitude of the informative block (0 = the real features, standardised per column).
        seed: seeds the projection and the noise. block_snr: per-feature SNR inside the informative block.

    Returns:
        ``(N, D)`` float32.
    """
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    if block_snr <= 0:
        raise ValueError(f"block_snr must be > 0, got {block_snr}")
    r = _z(np.asarray(real, dtype=np.float64))
    if ratio == 0:
        return r.astype(np.float32)
    h = one_hot(labels)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((h.shape[1], r.shape[1]))
    signal = h @ p
    sig_var = float(signal.var(0).mean()) or 1.0
    noise = rng.standard_normal(r.shape) * np.sqrt(sig_var / block_snr)
    return (r + ratio * _z(signal + noise)).astype(np.float32)
