"""The read-out ensemble of Magic's stage 2 (``decoder.ensemble``).

Before the decoder is trained, read-outs of the frozen stage-1 image embedding (the mean image token the decoder
reads; for the feature-bank encoder the stage-1 MLP output) are fitted on the stage-2 training spots:

* ``ridge``: standardise + ridge to the targets, the penalty chosen by leave-one-training-section-out
  cross-validation (mean-squared error over all targets, the grid of :data:`stmm_magic.baseline.RIDGE_ALPHAS`),
  as the ``stage1-ridge`` ablation chooses it; the standardisation is folded into the stored weights.
* ``retrieval`` (BLEEP-style, what the contrastive stage trains for): the spot's image is embedded with stage 1's
  image projection head, and the prediction is the mean expression of the ``k`` training spots whose stage-1
  *gene* embeddings are nearest (cosine), ``k`` chosen among :data:`stmm_magic.baseline.KNN_K` by the same
  leave-one-training-section-out CV.

Nothing about the held-out section or the stage-2 validation spots enters. The fitted read-outs are buffers of
the decoder (saved with the run, predicting bit for bit after a reload); in eval mode the prediction is the mean
of the decoder's output and theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from stmm_magic.model import MagicStage1, MagicStage2


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

    from stmm_magic.baseline import cv_alpha

    alpha = cv_alpha(x, y, groups)  # standardised features, no PCA
    mean, std = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    reg = Ridge(alpha=alpha).fit((x - mean) / std, y)
    weight = reg.coef_ / std  # (G, D): standardisation folded in
    bias = reg.intercept_ - weight @ mean
    return weight, bias, {"alpha": alpha, "cv": "leave one training section out",
                          "n_spots": int(len(x)), "features": int(x.shape[1])}


def retrieval_k(img: np.ndarray, keys: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[int, dict]:
    """``k`` of the joint-space retrieval chosen by leave-one-group-out CV (MSE over all targets)."""
    from stmm_magic.baseline import KNN_K, _group_folds

    errs = dict.fromkeys(KNN_K, 0.0)
    for tr, va in _group_folds(groups):
        order = np.argsort(-(img[va] @ keys[tr].T), axis=1, kind="stable")
        for k in KNN_K:
            pred = y[tr][order[:, : min(k, len(tr))]].mean(1)
            errs[k] += float(((pred - y[va]) ** 2).sum())
    k = min(errs, key=errs.get)
    return k, {"k": k, "ks_searched": list(KNN_K), "cv": "leave one training section out"}


def fit_readouts(model: "MagicStage2", stage1: "MagicStage1", tiles: torch.Tensor, tokens: torch.Tensor,
                 targets: torch.Tensor, train_idx: np.ndarray, groups: np.ndarray,
                 device: str = "cpu") -> dict[str, Any] | None:
    """Fit the decoder's ensemble on rows *train_idx* (sections = *groups*); None when it has none.

    *stage1* supplies the image projection head and the gene embeddings of the training spots (retrieval)."""
    from stmm_core.errors import SpecError

    dec = model.decoder
    members = list(getattr(dec, "members", []) or [])
    if not members:
        return None
    idx = np.asarray(train_idx, dtype=np.int64)
    rows = torch.as_tensor(idx)
    with torch.no_grad():
        n_tok = model.image(tiles[:2].to(device))["tokens"].shape[1]
    if n_tok != 1:
        raise SpecError(f"decoder.ensemble reads the image encoder's single token (its pooled feature); "
                        f"{type(model.image).__name__} returns {n_tok} tokens: use image stain-bank-mlp or an "
                        "empty decoder.ensemble")
    x = image_embedding(model, tiles[rows], device)
    y = targets[rows].double().numpy()
    grp = np.asarray(groups)[idx]
    info: dict[str, Any] = {"members": ["decoder", *members], "weights": "equal", "n_spots": int(len(idx))}
    ridge = retrieval = None
    if "ridge" in members:
        w, b, info["ridge"] = ridge_coefficients(x, y, grp)
        ridge = (w, b)
    if "retrieval" in members:
        head = stage1.contrastive.image_proj
        pw, pb = head.weight.detach().double().cpu().numpy(), head.bias.detach().double().cpu().numpy()
        img = x @ pw.T + pb
        img /= np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
        keys = stage1.embed(tokens=tokens[rows])["gene"].double().numpy()
        k, info["retrieval"] = retrieval_k(img, keys, y, grp)
        retrieval = {"proj_weight": pw, "proj_bias": pb, "keys": keys, "values": y, "k": k}
    dec.set_ensemble(ridge, retrieval)
    return info
