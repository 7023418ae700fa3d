"""Variational graph autoencoder with a feature decoder and optional DEC refinement (StereoMM, fixed).

Fixes relative to the published ``CustomVAE`` (``seeds-spec.md`` A2–A4, A8.4–A8.8):

* one log-variance parameterisation everywhere: ``z = μ + ε·exp(½·logvar)`` and
  ``KL = −½ · mean_nodes Σ_dims (1 + logvar − μ² − exp(logvar))``; ``logvar`` clamped to [−10, 10];
* noise only in training mode; in eval mode ``z = μ`` and :meth:`VGAE.embed` returns μ;
* the decoder's output layer is linear (no activation), so it can reproduce z-scored (negative) targets;
* the loss is chosen from the decoder type (only the feature decoder + MSE is offered);
* DEC (Xie et al. 2016) really trains: trainable centres, Student-t
  ``q_ik ∝ (1 + ‖z_i − μ_k‖²/α)^{−(α+1)/2}``,
  target ``p_ik ∝ q_ik² / f_k``, and ``dec_weight · KL(P‖Q)`` added to the loss;
* float32, dropout available, GCN / GAT / SAGE layers throughout (encoder, heads and decoder).

DEC protocol for the trainer::

    out = model(x, ctx); ...                         # autoencoder stage
    centres = model.start_refinement(model.embed(x, ctx), n_clusters=K, seed=seed)
    optimizer.add_param_group({"params": [centres]})  # the centres must be optimised
    for step in range(steps):
        if step % params.dec_update_interval == 0:
            changed = model.update_target(model.embed(x, ctx))
            if step > 0 and changed < params.dec_tol: break
        loss = model.loss(model(x, ctx), target)["loss"]   # now includes dec_weight·KL(P‖Q)
        ...
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmm_core.errors import DataError
from stmm_core.interfaces import GraphContext, GraphModel, GraphModelOutput, PartitionSupport

from .layers import make_conv
from .params import VGAEParams

LOGVAR_MIN, LOGVAR_MAX = -10.0, 10.0


def student_t_q(z: Tensor, centres: Tensor, alpha: float) -> Tensor:
    """DEC soft assignments ``q_ik ∝ (1 + ‖z_i − μ_k‖²/α)^{−(α+1)/2}``, rows summing to 1.

    Shapes: ``z`` ``(N, L)``, ``centres`` ``(K, L)`` → ``(N, K)``.
    """
    d2 = (z.pow(2).sum(1, keepdim=True) - 2.0 * z @ centres.T + centres.pow(2).sum(1)).clamp_min(0.0)
    logits = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.softmax(logits, dim=1)


def dec_target(q: Tensor) -> Tensor:
    """DEC target ``p_ik = (q_ik² / f_k) / Σ_k' (q_ik'² / f_k')`` with ``f_k = Σ_i q_ik``: ``(N, K) → (N, K)``."""
    w = q.pow(2) / q.sum(0, keepdim=True).clamp_min(1e-12)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


class VGAE(nn.Module, GraphModel):
    """Graph VAE: ``x`` ``(N, D_in)`` on a spatial graph → ``z, μ, logvar`` ``(N, L)`` and ``recon`` ``(N, D_t)``.

    Encoder: ``conv(D_in→h_1) → act → dropout → … → conv(→h_k) → act → dropout``; heads ``μ, logvar =
    conv(h_k→L)``; decoder: ``conv(L→h_k) → act → … → conv(h_1→D_t)`` with a linear output.
    ``loss(out, target)`` → ``{"recon", "kl", ["dec",] "loss"}``.
    """

    shapes = {"x": "(N, D_in)", "z": "(N, L)", "recon": "(N, D_target)"}

    def __init__(self, params: VGAEParams) -> None:
        nn.Module.__init__(self)
        GraphModel.__init__(self, params)
        self.latent_dim = params.latent
        self.d_in = 0
        self.d_target = 0
        self.n_nodes = 0
        self.dec_centres: nn.Parameter | None
        self.register_parameter("dec_centres", None)  # (K, L) DEC centres, created by start_refinement
        self.register_buffer("dec_p", None, persistent=False)  # (N, K) DEC target, training-only state
        self._dec_labels: np.ndarray | None = None
        self.decoder_cov: nn.ModuleList | None = None  # per-layer covariate maps (decoder_covariates), set up later
        self._ready = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def partition_support(cls, params: VGAEParams) -> PartitionSupport:
        """``2·len(hidden) + 2`` hops (encoder, μ/log-variance heads, decoder: one graph layer each on the longest
        path); exact without dropout, the noise shared over partitions (``ctx.noise``). DEC is full-batch only."""
        return PartitionSupport(
            hops=2 * len(params.hidden) + 2, exact=params.dropout == 0.0, noise=True,
            reason="" if params.dropout == 0.0 else "dropout masks are drawn per partition")

    def setup(self, d_in: int, d_target: int, n_nodes: int) -> None:
        """Create all layers for input width ``d_in`` and reconstruction width ``d_target``."""
        p = self.params
        if d_in < 1 or d_target < 1:
            raise DataError(f"the graph model needs positive widths, got d_in={d_in}, d_target={d_target}")
        self.d_in, self.d_target, self.n_nodes = d_in, d_target, n_nodes
        widths = [d_in, *p.hidden]
        self.encoder = nn.ModuleList(make_conv(p.conv, a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.mu_head = make_conv(p.conv, p.hidden[-1], p.latent)
        self.logvar_head = make_conv(p.conv, p.hidden[-1], p.latent)
        dec_widths = [p.latent, *reversed(p.hidden), d_target]
        self.decoder = nn.ModuleList(make_conv(p.conv, a, b) for a, b in zip(dec_widths[:-1], dec_widths[1:]))
        n_cov = len(p.decoder_covariates)
        # scVI-style conditioning: the covariates enter every decoder layer through a per-spot linear map (not
        # through the graph layer, which would average them over neighbours and lose their per-spot part)
        self.decoder_cov = (nn.ModuleList(nn.Linear(n_cov, b, bias=False) for b in dec_widths[1:])
                            if n_cov else None)
        self.act = nn.ELU() if p.activation == "elu" else nn.ReLU()
        self.drop = nn.Dropout(p.dropout)
        self._ready = True

    # ------------------------------------------------------------------ forward
    def _check(self, x: Tensor, ctx: GraphContext) -> Tensor:
        if not self._ready:
            raise RuntimeError("VGAE.setup(d_in, d_target, n_nodes) must be called before forward")
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise DataError(f"graph model input must be (N, {self.d_in}), got {tuple(x.shape)}")
        if ctx.n_nodes != x.shape[0]:
            raise DataError(f"the graph has {ctx.n_nodes} nodes but the features have {x.shape[0]} rows")
        return x if x.dtype == torch.float32 else x.float()

    def encode(self, x: Tensor, ctx: GraphContext) -> tuple[Tensor, Tensor]:
        """``x`` ``(N, D_in)`` → ``μ, logvar`` ``(N, L)`` (logvar clamped to [−10, 10])."""
        h = self._check(x, ctx)
        for conv in self.encoder:
            h = self.drop(self.act(conv(h, ctx)))
        mu = self.mu_head(h, ctx)
        logvar = self.logvar_head(h, ctx).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return mu, logvar

    def decode(self, z: Tensor, ctx: GraphContext) -> Tensor:
        """``z`` ``(N, L)`` → reconstruction ``(N, D_target)``; the last layer has no activation.

        With ``decoder_covariates`` every decoder layer adds a per-spot linear map of ``ctx.covariates`` ``(N, C)``
        to its graph layer's output: ``h ← act(conv(h) + W_c·c)``.
        """
        h = z
        cov = None
        if self.decoder_cov is not None:
            n_cov = len(self.params.decoder_covariates)
            cov = ctx.covariates
            if cov is None or tuple(cov.shape) != (z.shape[0], n_cov):
                got = None if cov is None else tuple(cov.shape)
                raise DataError(f"the decoder needs covariates of shape ({z.shape[0]}, {n_cov}) in the graph "
                                f"context ({', '.join(self.params.decoder_covariates)}), got {got}")
            cov = cov.to(z.dtype)
        last = len(self.decoder) - 1
        for i, conv in enumerate(self.decoder):
            h = conv(h, ctx)
            if cov is not None:
                h = h + self.decoder_cov[i](cov)
            if i < last:
                h = self.act(h)
        return h

    def forward(self, x: Tensor, ctx: GraphContext) -> GraphModelOutput:
        """``x`` ``(N, D_in)`` → :class:`GraphModelOutput` (``z`` sampled in training mode, ``z = μ`` in eval)."""
        mu, logvar = self.encode(x, ctx)
        if self.training:
            eps = ctx.noise if ctx.noise is not None else torch.randn_like(mu)
            if eps.shape != mu.shape:
                raise DataError(f"context noise has shape {tuple(eps.shape)}, expected {tuple(mu.shape)}")
            z = mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return GraphModelOutput(z=z, mu=mu, logvar=logvar, recon=self.decode(z, ctx))

    def embed(self, x: Tensor, ctx: GraphContext) -> Tensor:
        """Posterior mean ``μ`` ``(N, L)``, computed in eval mode under ``torch.inference_mode()``.

        The module's training flag is restored afterwards. The result is an inference tensor: clone it before
        using it in autograd.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                mu, _ = self.encode(x, ctx)
        finally:
            self.train(was_training)
        return mu

    # ------------------------------------------------------------------ loss
    @staticmethod
    def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
        """``−½ · mean_nodes Σ_dims (1 + logvar − μ² − exp(logvar))`` (KL to N(0, I), per node)."""
        return -0.5 * torch.mean(torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=1))

    def loss(self, out: GraphModelOutput, target: Tensor) -> dict[str, Tensor]:
        """``recon`` = MSE(recon, target) (mean over all entries), ``kl``, ``dec`` (when refining), ``loss``.

        ``loss = recon + kl_weight·kl (+ dec_weight·KL(P‖Q))``. The DEC term is computed on ``out.mu`` (the
        deterministic embedding that is clustered downstream), not on the sampled ``z``.
        """
        p = self.params
        if target.shape != out.recon.shape:
            raise DataError(
                f"reconstruction target has shape {tuple(target.shape)}, expected {tuple(out.recon.shape)}"
            )
        recon = F.mse_loss(out.recon, target.to(out.recon.dtype))
        kl = self.kl_divergence(out.mu, out.logvar)
        terms: dict[str, Tensor] = {"recon": recon, "kl": kl}
        total = recon + p.kl_weight * kl
        if self.refinement_active:
            dec = self.dec_loss(out.mu)
            terms["dec"] = dec
            total = total + p.dec_weight * dec
        terms["loss"] = total
        return terms

    # ------------------------------------------------------------------ DEC
    @property
    def refinement_active(self) -> bool:
        """True once :meth:`start_refinement` has created the cluster centres."""
        return self.dec_centres is not None

    def soft_assign(self, mu: Tensor) -> Tensor:
        """Student-t soft assignment ``Q`` ``(N, K)`` of ``mu`` ``(N, L)`` to the centres."""
        if self.dec_centres is None:
            raise RuntimeError("call start_refinement() before using DEC")
        return student_t_q(mu, self.dec_centres, self.params.dec_alpha)

    def dec_loss(self, mu: Tensor) -> Tensor:
        """``KL(P‖Q)`` (batchmean) between the current target ``P`` and ``Q(mu)``."""
        if self.dec_p is None:
            raise RuntimeError("call update_target() (done by start_refinement) before the DEC loss")
        if self.dec_p.shape[0] != mu.shape[0]:
            raise DataError(f"DEC target has {self.dec_p.shape[0]} rows but the embedding {mu.shape[0]}")
        q = self.soft_assign(mu)
        return F.kl_div(torch.log(q.clamp_min(1e-12)), self.dec_p, reduction="batchmean")

    def start_refinement(self, mu: Tensor, n_clusters: int, seed: int = 0) -> nn.Parameter:
        """Initialise DEC: KMeans (``n_init=10``) on ``mu`` ``(N, L)`` → trainable centres ``(K, L)``.

        Also computes the first target ``P``. Returns the new :class:`nn.Parameter`; the caller must add it to
        its optimiser (``optimizer.add_param_group({"params": [centres]})``), since it did not exist when the
        optimiser was created.
        """
        from sklearn.cluster import KMeans

        n = mu.shape[0]
        if n_clusters < 1 or n_clusters > n:
            raise DataError(f"DEC needs 1 ≤ n_clusters ≤ number of spots ({n}), got {n_clusters}")
        z = mu.detach().cpu().numpy().astype(np.float64)
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(z)
        centres = torch.as_tensor(km.cluster_centers_, dtype=torch.float32, device=self._device())
        self.dec_centres = nn.Parameter(centres)
        self._dec_labels = None
        self.update_target(mu)
        return self.dec_centres

    def update_target(self, mu: Tensor) -> float:
        """Recompute ``P`` from ``Q(mu)``; return the fraction of hard labels changed since the last update.

        The first call after :meth:`start_refinement` returns 1.0.
        """
        with torch.no_grad():
            z = mu.detach().clone().to(self._device(), torch.float32)  # plain tensor even from inference_mode
            q = self.soft_assign(z)
            self.dec_p = dec_target(q)
            labels = q.argmax(1).cpu().numpy()
        changed = 1.0 if self._dec_labels is None else float(np.mean(labels != self._dec_labels))
        self._dec_labels = labels
        return changed

    def stop_refinement(self) -> None:
        """Drop the DEC centres and target (the loss goes back to the autoencoder terms)."""
        self.dec_centres = None
        self.dec_p = None
        self._dec_labels = None

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool, *args: Any
    ) -> None:
        # A checkpoint saved after DEC holds the centres: create the parameter so strict loading works.
        key = prefix + "dec_centres"
        if key in state_dict and self.dec_centres is None:
            self.dec_centres = nn.Parameter(torch.empty_like(state_dict[key], dtype=torch.float32))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)
