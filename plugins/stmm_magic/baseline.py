"""The HEST-Benchmark baseline: ridge regression on a PCA of frozen tile embeddings.

As in mahmoodlab/HEST (``train_test_reg``): StandardScaler → PCA(256) fitted on the training embeddings,
then ridge with ``alpha = 100 / (n_features · n_targets)``. HEST fits without intercept; because the PCA
scores are centred on the training set, fitting an intercept gives the same slopes (so the same Pearson r)
and sensible absolute values, so we fit one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def pooled_features(image_encoder: nn.Module, tiles: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Frozen pooled features ``(N, D)`` float32 of uint8 tiles ``(N, 3, S, S)`` (eval mode, no augmentation)."""
    was = image_encoder.training
    image_encoder.eval()
    t = torch.as_tensor(tiles)
    out = [image_encoder(t[i:i + batch_size])["pooled"].float().cpu() for i in range(0, len(t), batch_size)]
    image_encoder.train(was)
    return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)


def hest_ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_components: int = 256,
               seed: int = 0) -> tuple[np.ndarray, dict]:
    """Fit scaler + PCA + ridge on ``x_train (N, D)`` → ``y_train (N, G)``; predict ``(M, G)`` for ``x_test``.

    Returns the predictions and a dict describing the fit (components kept, alpha).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(n_components, x_train.shape[0], x_train.shape[1]))
    pipe = Pipeline([("scaler", StandardScaler()), ("pca", PCA(n_components=k, random_state=seed))])
    z_train = pipe.fit_transform(x_train.astype(np.float64))
    z_test = pipe.transform(x_test.astype(np.float64))
    alpha = 100.0 / (z_train.shape[1] * y_train.shape[1])
    reg = Ridge(alpha=alpha, solver="lsqr", fit_intercept=True, max_iter=1000, random_state=seed)
    reg.fit(z_train, y_train.astype(np.float64))
    return reg.predict(z_test).astype(np.float32), {"pca_components": k, "alpha": alpha}
