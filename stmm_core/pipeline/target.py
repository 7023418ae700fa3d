"""The reconstruction target of a graph model: a declared setting of the pipeline (``train.target``).

A graph model is trained to reconstruct a fixed ``(N, D_t)`` matrix from its latent code. Which matrix is a
choice of the pipeline, not of the fusion module, so fusion and graph model can be exchanged independently:

* ``inputs`` (default): the features the fusion reads (:attr:`~stmm_core.interfaces.Fusion.modalities`), each
  block scaled by the pipeline's modality weights, ``[img_weight·img ‖ gene_weight·gene]``. The weights are the
  fusion's parameters ``img_weight``/``gene_weight`` when it has them (1 otherwise); when its parameters say
  ``balance = true`` the image block is first rescaled to the gene block's root-mean-square row norm, so the
  weights alone set each modality's share of the loss. This is what every spec without the setting means
  (up to stmm 0.1 each fusion computed it itself), so those specs keep their hash and their results.
* ``gene`` / ``image``: that modality's features alone, unweighted;
* ``concat``: ``[img ‖ gene]`` unweighted, no balancing (the gene features alone without an image).

Never the trainable fusion output: reconstructing it would let fusion and decoder collapse together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stmm_core.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The values of ``train.target``.
TARGETS: tuple[str, ...] = ("inputs", "gene", "image", "concat")


def rms_norm(x: "torch.Tensor") -> "torch.Tensor":
    """Root-mean-square row norm ``sqrt(mean_i ‖x_i‖²)`` of ``(N, D)`` ``x`` (a 0-d tensor)."""
    return x.pow(2).sum(1).mean().sqrt()


def _float(x: "torch.Tensor") -> "torch.Tensor":
    import torch

    return x if x.dtype == torch.float32 else x.float()


def reconstruction_target(
    target: str, fusion: Any, img: "torch.Tensor | None", gene: "torch.Tensor"
) -> "torch.Tensor":
    """The fixed target ``(N, D_t)`` float32 for ``train.target`` = *target* (see the module docstring).

    ``fusion`` is the pipeline's fusion component: only its declared ``modalities`` and its modality-weight
    parameters are read. ``img`` ``(N, D_img)`` or None, ``gene`` ``(N, D_gene)``. Depends on no trainable
    parameter.
    """
    import torch

    if target not in TARGETS:
        raise SpecError(f"unknown reconstruction target train.target={target!r}; choose one of {', '.join(TARGETS)}")
    if target in ("image",) and img is None:
        raise SpecError("train.target=image needs image features, but this pipeline has none; use "
                        "--set train.target=gene (or inputs), or add an image encoder")
    gene = _float(gene)
    if target == "gene":
        return gene
    if target == "image":
        return _float(img)
    if target == "concat":
        return gene if img is None else torch.cat([_float(img), gene], dim=1)
    # inputs: the fusion's modalities at its modality weights
    params = getattr(fusion, "params", None)
    img_weight = getattr(params, "img_weight", None)
    gene_weight = getattr(params, "gene_weight", None)
    if img is not None and img_weight == "auto":
        raise SpecError("fusion.img_weight='auto' is chosen by the graph-fusion pipeline before training; "
                        "outside it give a number (--set fusion.img_weight=0.5)")
    modalities = tuple(getattr(fusion, "modalities", ("image", "gene")))
    use_img = img is not None and "image" in modalities
    use_gene = "gene" in modalities or not use_img
    gene_block = gene if gene_weight is None else gene * gene_weight
    if not use_img:
        return gene_block
    img = _float(img)
    if use_gene and getattr(params, "balance", False):
        img = img * (rms_norm(gene) / rms_norm(img).clamp_min(1e-12))
    img_block = img if img_weight is None else img * img_weight
    return torch.cat([img_block, gene_block], dim=1) if use_gene else img_block
