"""Masked-expression pre-training of Magic's gene encoder on sections that have counts but no image.

Before stage 1, the Performer gene encoder can learn gene-gene structure from extra count tables (e.g. the 30
HER2ST sections in ``her2st/ST-cnts``): a fraction ``pretrain_mask`` of each spot's gene tokens is replaced by
the mask token and a linear head on the token states predicts the original expression bin (cross-entropy on
the masked positions only). The head is discarded; stage 1 starts from the pre-trained encoder. Tokens are
made exactly as in stage 1 (library-size normalisation, then binning), so shallow and deep sections mix.

Settings (``gene.*``): ``pretrain_counts`` (tables or folders of tables), ``pretrain_epochs`` (0: off),
``pretrain_mask``, ``pretrain_lr``. A table must not hold a section that is evaluated: the caller lists them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from stmm_core.errors import DataError

COUNT_SUFFIXES = (".tsv", ".tsv.gz", ".csv", ".csv.gz")


def count_tables(items: Sequence[str | Path]) -> list[Path]:
    """Expand folders into their count tables (sorted); each path must exist."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.name.endswith(COUNT_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"gene.pretrain_counts: {p} not found (give count tables or folders of them)")
    if not out:
        raise DataError("gene.pretrain_counts holds no count tables (.tsv/.tsv.gz/.csv)")
    return out


def read_count_table(path: Path) -> tuple[list[str], Any]:
    """``(gene names, CSR counts (spots, genes))`` of a spots x genes table whose header row names the genes."""
    import pandas as pd
    import scipy.sparse as sp

    sep = "," if ".csv" in path.name else "\t"
    try:
        df = pd.read_csv(path, sep=sep, index_col=0)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read a spots x genes count table ({exc})") from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(f"{path}: empty count table")
    try:
        counts = sp.csr_matrix(df.to_numpy(dtype=np.float32))
    except ValueError:
        raise DataError(f"{path}: non-numeric counts; expected spots x genes with a header row of gene names") from None
    return [str(g) for g in df.columns], counts


def table_tokens(encoder: Any, paths: Sequence[Path]) -> tuple[np.ndarray, dict[str, Any]]:
    """Tokens of every spot of every table over the encoder's vocabulary (genes matched by name)."""
    chunks, used = [], []
    for p in paths:
        genes, counts = read_count_table(p)
        index = {g: i for i, g in enumerate(genes)}
        cols = np.array([index.get(g, -1) for g in encoder.vocab], dtype=np.int64)
        keep = np.asarray(counts.sum(axis=1)).ravel() > 0
        if (cols >= 0).sum() == 0 or not keep.any():
            continue
        chunks.append(encoder.tokenize_counts(counts[np.flatnonzero(keep)], cols))
        used.append({"table": p.name, "spots": int(keep.sum()), "vocab_found": int((cols >= 0).sum())})
    if not chunks:
        raise DataError("gene.pretrain_counts: no table measures any of the encoder's input genes")
    return np.concatenate(chunks), {"tables": used, "n_spots": int(sum(u["spots"] for u in used))}


def mask_tokens(tokens: torch.Tensor, mask_token: int, frac: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, where)``: a fraction *frac* of the measured positions replaced by *mask_token*."""
    measured = tokens != mask_token
    where = (torch.rand(tokens.shape, generator=g) < frac) & measured
    return tokens.masked_fill(where, mask_token), where


def pretrain_gene_encoder(encoder: nn.Module, log: Callable[[str], None] | None = None,
                          seed: int = 0, batch_size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Pre-train *encoder* in place by masked-expression modelling on its ``pretrain_counts``; returns a
    record (tables, spots, per-epoch loss and masked-token accuracy, and the accuracy of always predicting
    the most frequent bin, for scale)."""
    from stmm_magic.train import lr_at

    p = encoder.params
    log = log or (lambda m: None)
    tokens_np, info = table_tokens(encoder, count_tables(p.pretrain_counts or []))
    tokens = torch.from_numpy(tokens_np)
    g = torch.Generator().manual_seed(seed + 7)
    head = nn.Linear(encoder.token_dim, p.n_bins + 1).to(device)
    params = [q for q in encoder.parameters() if q.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=p.pretrain_lr, weight_decay=0.01)
    n = len(tokens)
    n_batches = max(n // batch_size, 1)
    total, step = p.pretrain_epochs * n_batches, 0
    measured = tokens[tokens != encoder.mask_token]
    majority = float((measured == torch.mode(measured).values).float().mean()) if len(measured) else 0.0
    history = []
    encoder.train()
    for epoch in range(p.pretrain_epochs):
        t0, sums, hits, cnt = time.perf_counter(), 0.0, 0, 0
        perm = torch.randperm(n, generator=g)
        for b in range(n_batches):
            rows = perm[b * batch_size:(b + 1) * batch_size]
            x, where = mask_tokens(tokens[rows], encoder.mask_token, p.pretrain_mask, g)
            if not where.any():
                continue
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step, total, n_batches, p.pretrain_lr, p.pretrain_lr * 0.01)
            logits = head(encoder(x.to(device))["tokens"])[where.to(device)]
            target = tokens[rows][where].to(device)
            loss = nn.functional.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sums += float(loss.detach()) * int(where.sum())
            hits += int((logits.argmax(-1) == target).sum())
            cnt += int(where.sum())
        rec = {"epoch": epoch + 1, "loss": sums / max(cnt, 1), "masked_acc": hits / max(cnt, 1),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        log(f"gene pre-training epoch {epoch + 1}/{p.pretrain_epochs}: masked-bin loss {rec['loss']:.4f}, "
            f"accuracy {rec['masked_acc']:.3f} (most frequent bin {majority:.3f})")
    return {**info, "epochs": p.pretrain_epochs, "mask": p.pretrain_mask, "majority_acc": majority,
            "history": history}


def maybe_pretrain(model1: Any, log: Callable[[str], None] | None, seed: int, device: str) -> dict[str, Any] | None:
    """Pre-train the stage-1 model's gene encoder when its spec asks for it (``gene.pretrain_epochs > 0``)."""
    gene = model1.gene
    p = getattr(gene, "params", None)
    if p is None or not getattr(p, "pretrain_epochs", 0):
        return None
    if not p.pretrain_counts:
        raise DataError("gene.pretrain_epochs > 0 needs gene.pretrain_counts (count tables without images)")
    return pretrain_gene_encoder(gene, log, seed=seed, device=device)
