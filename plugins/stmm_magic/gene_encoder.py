"""scBERT-style gene encoder: binned expression tokens + gene-identity embedding (by NAME) + Performer + pooling.

The encoder owns its vocabulary (a list of gene names, fixed by :meth:`PerformerGeneEncoder.fit` or
:meth:`PerformerGeneEncoder.setup`). Each spot becomes a sequence of L = len(vocabulary) tokens; token j
carries ``bin_embedding[bin(x_gj)] + gene_embedding[j]``. Genes are looked up in a section by name, so
column order never matters; a vocabulary gene absent from a section gets the mask token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from stmm_core.errors import DataError
from stmm_core.interfaces import GeneEncoder
from stmm_magic.genes import bin_tokens, gene_columns, normalise_counts, select_genes
from stmm_magic.params import PerformerGeneEncoderParams
from stmm_magic.performer import Performer

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section


class AttentionPool(nn.Module):
    """Learned-query attention pooling over tokens: ``(B, L, d)`` → ``(B, d)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim) * dim ** -0.5)
        self.key = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.key(x) @ self.query / x.shape[-1] ** 0.5  # (B, L)
        return (scores.softmax(-1).unsqueeze(-1) * x).sum(1)


def read_embedding_table(path: str | Path) -> tuple[list[str], np.ndarray]:
    """A gene embedding table: rows ``name v1 v2 …`` (whitespace, tab or comma separated; gene2vec text format).

    A first line holding only two integers (word2vec header) is skipped.
    """
    import re

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"gene embedding file not found: {p}")
    names, rows = [], []
    with open(p) as fh:
        for i, line in enumerate(fh):
            parts = [t for t in re.split(r"[\s,]+", line.strip()) if t]
            if not parts or (i == 0 and len(parts) == 2 and all(t.isdigit() for t in parts)):
                continue
            try:
                rows.append([float(t) for t in parts[1:]])
            except ValueError:
                if i == 0:
                    continue  # a header line
                raise DataError(f"{p}:{i + 1}: expected 'gene v1 v2 …' with numbers") from None
            names.append(parts[0])
    if not rows or len({len(r) for r in rows}) != 1:
        raise DataError(f"{p}: no rows, or rows of different lengths; expected 'gene v1 v2 …' per line")
    return names, np.asarray(rows, dtype=np.float32)


class PerformerGeneEncoder(nn.Module, GeneEncoder):
    """Gene tokens → pooled spot embedding and per-gene token states.

    Shapes: ``forward(tokens (B, L) int64)`` → ``{"pooled": (B, out_dim), "tokens": (B, L, dim)}`` float32,
    with L = ``len(self.vocab)``; token values in ``[0, n_bins]`` plus ``mask_token = n_bins + 1``.
    """

    shapes = {"tokens": "(B, L) int64", "pooled": "(B, D_gene)", "token_states": "(B, L, dim)"}

    def __init__(self, params: PerformerGeneEncoderParams) -> None:
        nn.Module.__init__(self)
        GeneEncoder.__init__(self, params)
        p = params
        self.out_dim = p.out_dim
        self.token_dim = p.dim
        self.mask_token = p.n_bins + 1
        self.vocab: list[str] = []
        self.bin_embedding = nn.Embedding(p.n_bins + 2, p.dim)
        self.gene_embedding: nn.Embedding | None = None
        self.performer = Performer(p.dim, p.depth, p.heads, p.dim_head, p.ff_mult, p.attention, p.nb_features,
                                   p.redraw_interval, p.dropout)
        self.pool = AttentionPool(p.dim) if p.pooling == "attention" else None
        self.head = nn.Sequential(nn.LayerNorm(p.dim), nn.Linear(p.dim, p.out_dim))
        nn.init.normal_(self.bin_embedding.weight, std=0.02)

    # -- vocabulary ------------------------------------------------------------------------------
    def setup(self, vocab: Sequence[str]) -> "PerformerGeneEncoder":
        """Fix the vocabulary (gene names) and build the gene-identity embedding ``(V, dim)``."""
        vocab = [str(g) for g in vocab]
        if len(set(vocab)) != len(vocab):
            raise DataError("the gene vocabulary has duplicate names")
        self.vocab = vocab
        emb = nn.Embedding(len(vocab), self.params.dim)
        nn.init.normal_(emb.weight, std=0.02)
        if self.params.gene_embedding_file:
            names, table = read_embedding_table(self.params.gene_embedding_file)
            if table.shape[1] != self.params.dim:
                raise DataError(
                    f"{self.params.gene_embedding_file}: vectors have {table.shape[1]} values but the gene encoder "
                    f"dim is {self.params.dim}; set gene.dim={table.shape[1]}"
                )
            row = {n: i for i, n in enumerate(names)}
            with torch.no_grad():
                for j, g in enumerate(vocab):
                    if g in row:
                        emb.weight[j] = torch.from_numpy(table[row[g]])
        emb.weight.requires_grad_(not self.params.freeze_gene_embedding)
        self.gene_embedding = emb
        return self

    def fit_sections(self, sections: Sequence["Section"]) -> "PerformerGeneEncoder":
        """Choose the input genes on the training sections (``n_genes`` by ``gene_selection``, or ``genes``)."""
        p = self.params
        genes = select_genes(sections, p.n_genes, p.gene_selection, p.genes, p.target_sum, "input genes",
                             setting="gene.n_genes")
        return self.setup(genes)

    def fit(self, section: "Section") -> "PerformerGeneEncoder":
        return self.fit_sections([section])

    # -- tokenisation ----------------------------------------------------------------------------
    def tokenize(self, section: "Section") -> np.ndarray:
        """The section's spots as int64 tokens ``(N, L)`` over the vocabulary, genes matched by name.

        Vocabulary genes missing from the section get ``mask_token``; if none of them is present a
        :class:`DataError` is raised.
        """
        if not self.vocab:
            raise RuntimeError("gene encoder has no vocabulary: call fit()/setup() first")
        cols = gene_columns(section, self.vocab, "input genes", allow_missing=True)
        ok = cols >= 0
        if not ok.any():
            raise DataError(
                f"section {section.name!r} measures none of the gene encoder's {len(self.vocab)} input genes "
                f"(e.g. {self.vocab[0]!r}); gene names must match (symbols vs Ensembl ids?)"
            )
        return self.tokenize_counts(section.counts, cols)

    def tokenize_counts(self, counts: Any, cols: np.ndarray) -> np.ndarray:
        """Tokens ``(N, L)`` of a raw count matrix ``(N, G)`` whose column ``cols[j]`` holds vocabulary gene ``j``
        (``-1``: not measured → ``mask_token``). Library-size normalised before binning, so a shallower
        section gives the same tokens for the same composition."""
        import scipy.sparse as sp

        ok = cols >= 0
        norm = normalise_counts(sp.csr_matrix(counts), self.params.target_sum)
        tokens = np.full((norm.shape[0], len(self.vocab)), self.mask_token, dtype=np.int64)
        tokens[:, ok] = bin_tokens(norm[:, cols[ok]].toarray(), self.params.n_bins, self.params.binning)
        return tokens

    # -- model -----------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """``tokens`` ``(B, L)`` int64 → ``pooled (B, out_dim)``, ``tokens (B, L, dim)``."""
        if self.gene_embedding is None:
            raise RuntimeError("gene encoder has no vocabulary: call fit()/setup() first")
        if tokens.shape[-1] != len(self.vocab):
            raise ValueError(f"expected {len(self.vocab)} gene tokens per spot, got {tokens.shape[-1]}")
        x = self.bin_embedding(tokens) + self.gene_embedding.weight.unsqueeze(0)
        h = self.performer(x)
        pooled = self.pool(h) if self.pool is not None else h.mean(1)
        return {"pooled": self.head(pooled), "tokens": h}

    @torch.no_grad()
    def transform(self, section: "Section") -> np.ndarray:
        """Pooled embeddings ``(N, out_dim)`` float32 for the section's spots (eval mode, batches of 64)."""
        was = self.training
        self.eval()
        tokens = torch.from_numpy(self.tokenize(section))
        out = [self(tokens[i:i + 64])["pooled"] for i in range(0, len(tokens), 64)]
        self.train(was)
        return torch.cat(out).numpy().astype(np.float32)
