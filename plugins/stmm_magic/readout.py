"""The ridge read-out of Magic's stage 2 (``decoder.ridge_readout = w > 0``).

Before the decoder is trained, a ridge regression from the frozen image embedding (the mean image token the
decoder reads; for the feature-bank encoder the stage-1 MLP output) to the targets is fitted on the stage-2
training spots. Its penalty is chosen by leave-one-training-section-out cross-validation (mean-squared error over
all targets, the grid of :data:`stmm_magic.baseline.RIDGE_ALPHAS`), so nothing about the held-out section or the
validation spots enters. The standardisation is folded into the stored weights, which are buffers of the decoder
(saved with the run, predicting bit for bit after a reload). The decoder then mixes ``(1 - w) · decoder + w ·
ridge`` in eval mode, including for the validation MSE that picks the decoder's epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from stmm_magic.model import MagicStage2


@torch.no_grad()
def image_embedding(model: "MagicStage2", tiles: torch.Tensor, device: str = "cpu",
                    batch_size: int = 256) -> np.ndarray:
    """Mean image token ``(N, D)`` float64 of every tile (eval mode, no augmentation)."""
    enc = model.image
    was = enc.training
    enc.eval()
    out = [enc(tiles[i:i + batch_size].to(device))["tokens"].float().mean(1).cpu()
           for i in range(0, len(tiles), batch_size)]
    enc.train(was)
    return torch.cat(out).numpy().astype(np.float64)


def ridge_coefficients(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(W (G, D), b (G,), info)`` of standardise + ridge on ``x (N, D)`` → ``y (N, G)``, the penalty chosen by
    leave-one-group-out CV (one group: 5 contiguous blocks), as the ``ridge-cv`` baseline chooses it."""
    from sklearn.linear_model import Ridge

    from stmm_magic.baseline import RIDGE_ALPHAS, _group_folds

    def scaled(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (a - ref.mean(0)) / np.where(ref.std(0) > 0, ref.std(0), 1.0)

    errs = np.zeros(len(RIDGE_ALPHAS))
    for tr, va in _group_folds(groups):
        z_tr, z_va = scaled(x[tr], x[tr]), scaled(x[va], x[tr])
        for i, a in enumerate(RIDGE_ALPHAS):
            pred = Ridge(alpha=a).fit(z_tr, y[tr]).predict(z_va)
            errs[i] += float(((pred - y[va]) ** 2).sum())
    alpha = RIDGE_ALPHAS[int(np.argmin(errs))]
    mean, std = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    reg = Ridge(alpha=alpha).fit((x - mean) / std, y)
    weight = reg.coef_ / std  # (G, D): standardisation folded in
    bias = reg.intercept_ - weight @ mean
    return weight, bias, {"alpha": alpha, "cv": "leave one training section out",
                          "n_spots": int(len(x)), "features": int(x.shape[1])}


def fit_ridge_readout(model: "MagicStage2", tiles: torch.Tensor, targets: torch.Tensor, train_idx: np.ndarray,
                      groups: np.ndarray, device: str = "cpu") -> dict[str, Any] | None:
    """Fit the decoder's ridge read-out on rows *train_idx* (sections = *groups*); None when it has none."""
    dec = model.decoder
    w = float(getattr(dec.params, "ridge_readout", 0.0) or 0.0)
    if w <= 0:
        return None
    idx = np.asarray(train_idx, dtype=np.int64)
    x = image_embedding(model, tiles[torch.as_tensor(idx)], device)
    y = targets[torch.as_tensor(idx)].double().numpy()
    weight, bias, info = ridge_coefficients(x, y, np.asarray(groups)[idx])
    dec.set_ridge(weight, bias)
    return {"weight": w, **info}
