"""The two Magic models assembled from components.

Stage 1 (:class:`MagicStage1`): image encoder + gene encoder + contrastive objective (projection heads,
temperature, queues, momentum heads) + optional fusion module and matching objective, plus momentum (EMA)
copies of both encoders. Stage 2 (:class:`MagicStage2`): image encoder (loaded from stage 1 and frozen, by
default) + expression decoder over its tokens.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from stmm_magic.momentum import ema_update, momentum_copy

#: Sub-module names whose weights are only needed during training (not saved with the run).
TRAINING_ONLY_PREFIXES = ("momentum_image.", "momentum_gene.", "contrastive.image_proj_m.", "contrastive.gene_proj_m.",
                          "contrastive.image_queue.", "contrastive.gene_queue.")


class MagicStage1(nn.Module):
    """Image–gene contrastive pre-training with momentum distillation and image–gene matching.

    ``forward(tiles uint8 (B, 3, S, S), tokens int64 (B, L), idx int64 (B,), alpha)`` → dict of scalar
    losses (``loss`` is the total) and diagnostics.
    """

    def __init__(self, image: nn.Module, gene: nn.Module, contrastive: nn.Module, fusion: nn.Module | None = None,
                 matching: nn.Module | None = None) -> None:
        super().__init__()
        if matching is not None and fusion is None:
            raise ValueError("the matching objective needs a fusion module")
        self.image, self.gene, self.contrastive = image, gene, contrastive
        self.fusion, self.matching = fusion, matching
        contrastive.setup(image.out_dim, gene.out_dim)
        if fusion is not None:
            fusion.setup(image.token_dim, gene.token_dim)
        if matching is not None:
            matching.setup(fusion.out_dim)
        self.momentum_image = momentum_copy(image)
        self.momentum_gene = momentum_copy(gene)
        self.frozen: set[str] = set()

    def freeze_modules(self, names: Iterable[str]) -> None:
        """Freeze the named sub-modules (``image``, ``gene``, ``contrastive``, ``fusion``, ``matching``)."""
        for name in names:
            module = getattr(self, name, None)
            if module is not None:
                freeze([module])
                self.frozen.add(name)

    def train(self, mode: bool = True) -> "MagicStage1":
        super().train(mode)
        for m in (self.momentum_image, self.momentum_gene, self.contrastive.image_proj_m,
                  self.contrastive.gene_proj_m):
            m.eval()  # momentum models never use dropout; they are targets
        for name in self.frozen:
            getattr(self, name).eval()  # frozen modules stay in eval mode
        return self

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.contrastive.params.momentum
        ema_update(self.image, self.momentum_image, m)
        ema_update(self.gene, self.momentum_gene, m)
        self.contrastive.momentum_update()

    def forward(self, tiles: torch.Tensor, tokens: torch.Tensor, idx: torch.Tensor, alpha: float | None = None,
                generator: torch.Generator | None = None, global_batch: int | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch. Data-parallel: the arguments are this process's block of a batch of
        *global_batch* rows (see :mod:`stmm_magic.contrastive` and :mod:`stmm_magic.itm`)."""
        img = self.image(tiles)
        gen = self.gene(tokens)
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            img_m = self.momentum_image(tiles)["pooled"]
            gen_m = self.momentum_gene(tokens)["pooled"]
        out = self.contrastive(img["pooled"], gen["pooled"], img_m, gen_m, idx, alpha, global_batch=global_batch)
        total = out["loss"]
        result = {"loss_itc": out["loss_itc"], "temp": out["temp"]}
        if self.matching is not None and self.fusion is not None:
            itm = self.matching(self.fusion, img["tokens"], gen["tokens"], out["sim_i2g"], out["sim_g2i"], idx,
                                generator, global_batch=global_batch)
            total = total + itm["loss"]
            result.update(loss_itm=itm["loss_itm"], itm_acc=itm["itm_acc"])
        result["loss"] = total
        return result

    @torch.no_grad()
    def embed(self, tiles: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
              batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Unit embeddings (eval mode): ``image`` ``(N, e)`` from tiles, ``gene`` ``(N, e)`` from tokens."""
        was = self.training
        self.eval()
        dev = self.contrastive.temp.device
        out: dict[str, torch.Tensor] = {}
        if tiles is not None:
            out["image"] = torch.cat([
                self.contrastive.embed_image(self.image(tiles[i:i + batch_size].to(dev))["pooled"]).cpu()
                for i in range(0, len(tiles), batch_size)])
        if tokens is not None:
            out["gene"] = torch.cat([
                self.contrastive.embed_gene(self.gene(tokens[i:i + batch_size].to(dev))["pooled"]).cpu()
                for i in range(0, len(tokens), batch_size)])
        self.train(was)
        return out

    def saved_state(self) -> dict[str, torch.Tensor]:
        """Weights kept with the run: everything except the momentum copies and the queues."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


class MagicStage2(nn.Module):
    """Frozen (by default) image encoder → expression decoder.

    ``forward(tiles uint8 (B, 3, S, S))`` → predicted log1p-normalised expression ``(B, G)``.
    """

    def __init__(self, image: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.image, self.decoder = image, decoder

    def image_tokens(self, tiles: torch.Tensor) -> torch.Tensor:
        """Image tokens ``(B, 1 + T, D)``; without gradient when the encoder is frozen."""
        if any(p.requires_grad for p in self.image.parameters()):
            return self.image(tiles)["tokens"]
        with torch.no_grad():
            was = self.image.training
            self.image.eval()
            tok = self.image(tiles)["tokens"]
            self.image.train(was)
        return tok

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.image_tokens(tiles))

    @torch.no_grad()
    def predict(self, tiles: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Eval-mode predictions ``(N, G)`` in batches."""
        was = self.training
        self.eval()
        dev = self.decoder.gene_bias.device
        out = [self(tiles[i:i + batch_size].to(dev)).cpu() for i in range(0, len(tiles), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, len(self.decoder.targets))

    def saved_state(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())


def params_digest(module: nn.Module) -> str:
    """sha256 over the names and bytes of *module*'s parameters (sorted): identifies an initialisation."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def freeze(modules: Iterable[nn.Module]) -> None:
    """No gradient, eval mode, for each module (a frozen sub-module never trains)."""
    for m in modules:
        m.requires_grad_(False)
        m.eval()


def load_prefixed(target: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Load ``state[prefix + k]`` into ``target`` strictly (every key must be present and fit)."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = target.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"stage-1 weights for '{prefix.rstrip('.')}' do not fit: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
