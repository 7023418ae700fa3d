"""The interfaces every component implements, with their declared tensor shapes.

Notation: N spots in a section, B a mini-batch, G genes, D feature widths, L latent width, E edges.
Shapes are checked by :mod:`stmm_core.testing.conformance`.

This module imports neither torch nor numpy at import time; implementations subclass both
``torch.nn.Module`` (when they have parameters) and the interface here.

A new component goes in a plug-in package (registered by ``stmm_components``, :mod:`stmm_core.hookspecs`); a new
kind of pipeline is a pipeline family (:mod:`stmm_core.family`, :mod:`stmm_core.pipeline_base`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from pydantic import BaseModel

    from stmm_core.data.section import Section


class Component(ABC):
    """Common base: a component is built from its validated parameter model."""

    kind: ClassVar[str] = ""
    #: Declared shapes, ``{"argument or output": "shape"}``; documentation and conformance checks.
    shapes: ClassVar[dict[str, str]] = {}

    def __init__(self, params: "BaseModel") -> None:
        self.params = params


@dataclass(frozen=True)
class ImagePreprocessing:
    """How tiles must be prepared for an image encoder (from the model's own pretrained config)."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"


class ImageEncoder(Component):
    """Histology tiles → one feature vector per tile.

    ``encode(tiles)``: ``tiles`` uint8 ``(B, 3, H, W)`` (already resized to ``preprocessing.input_size``)
    → float32 ``(B, out_dim)``. Implementations normalise with ``preprocessing.mean/std`` themselves.
    ``identity()`` returns a string that changes whenever the weights change (feature cache key).
    """

    kind = "image_encoder"
    shapes = {"tiles": "(B, 3, H, W) uint8", "return": "(B, D_img) float32"}
    out_dim: int
    preprocessing: ImagePreprocessing

    @abstractmethod
    def encode(self, tiles: "torch.Tensor") -> "torch.Tensor": ...

    @abstractmethod
    def identity(self) -> str: ...


class GeneEncoder(Component):
    """Raw counts → per-spot gene features (a preprocessor is a gene encoder without parameters).

    ``fit(section)`` learns gene selection/scaling from a section; ``transform(section)`` returns float32
    ``(N, out_dim)`` aligned with ``section.obs_names``. Genes are matched by name, never by column order.
    """

    kind = "gene_encoder"
    shapes = {"counts": "(N, G) sparse", "return": "(N, D_gene) float32"}
    out_dim: int

    @abstractmethod
    def fit(self, section: "Section") -> "GeneEncoder": ...

    @abstractmethod
    def transform(self, section: "Section") -> "np.ndarray": ...

    def fit_transform(self, section: "Section") -> "np.ndarray":
        return self.fit(section).transform(section)


@dataclass
class SpatialGraph:
    """A symmetric spatial graph over N spots, without self loops.

    ``edge_index``: int64 ``(2, E)`` (numpy), both directions present; ``distances``: float32 ``(E,)``;
    ``rank``: int16 ``(E,)``, for a kNN builder that ranks its picks, the position of the source among the
    target's own nearest neighbours (0 = nearest), -1 where the edge is there only by symmetrisation (None: not
    ranked; read-outs over the nearest neighbours then order by ``distances``).
    """

    edge_index: "np.ndarray"
    n_nodes: int
    distances: "np.ndarray | None" = None
    meta: dict[str, Any] = field(default_factory=dict)
    rank: "np.ndarray | None" = None

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def mean_degree(self) -> float:
        return self.n_edges / max(self.n_nodes, 1)

    def torch_edge_index(self, device: Any = "cpu") -> "torch.Tensor":
        import torch

        return torch.as_tensor(self.edge_index, dtype=torch.long, device=device)


class GraphBuilder(Component):
    """Coordinates ``(N, 2)`` float (full-resolution pixels) → :class:`SpatialGraph` (symmetric)."""

    kind = "graph_builder"
    shapes = {"coords": "(N, 2) float", "return": "edge_index (2, E) int64"}

    @abstractmethod
    def build(self, coords: "np.ndarray", spot_diameter: float | None = None) -> SpatialGraph: ...


@dataclass(frozen=True)
class PartitionSupport:
    """How a fusion or graph model trains over spatial partitions (``train.batch = partition``).

    Partition (mini-batch) training cuts a section into spatial partitions, each extended by a halo of all
    spots within ``hops`` graph hops (fusion's plus graph model's), and sums the partitions' losses weighted by
    their share of the spots (:mod:`stmm_core.pipeline.minibatch`). A component declares it with the classmethod
    ``partition_support(params)``; one that returns ``None`` (the default) cannot be trained over partitions.

    Attributes:
        hops: receptive field in graph hops: the output (and the loss terms) of a spot depend on inputs at most
            this many hops away on the spatial graph. ``None``: cannot be trained over partitions (``reason``
            says why, e.g. attention over all spots).
        exact: with ``train.accumulate = true``, the summed partition loss and its gradient equal the full-batch
            loss and gradient (to float summation order), given the shared draws below. ``False``: it trains,
            but only approximates full-batch training (``reason`` says why; recorded in ``metrics.json``).
        noise: the model reads ``GraphContext.noise``: one ``(N, latent_dim)`` standard-normal draw per spot
            and step, drawn over the whole section by the partition trainer.
        negatives: the model reads ``GraphContext.negatives``: its input rows under one permutation of the
            whole section per step, which it draws with ``negative_permutation(n, device)``; the partition
            trainer fuses the permuted spots and hands each partition its rows.
        reason: why the component is not exact, or cannot be partitioned.
    """

    hops: int | None
    exact: bool = True
    noise: bool = False
    negatives: bool = False
    reason: str = ""


class Fusion(Component):
    """Image features + gene features (+ the spatial graph) → fused features, trainable.

    ``forward(img, gene, graph)``: ``img`` ``(N, D_img)`` or None, ``gene`` ``(N, D_gene)``,
    ``graph`` a :class:`GraphContext` → ``(N, out_dim)``. ``setup(d_img, d_gene)`` is called once before
    training to size the layers. ``modalities`` names the inputs the fusion reads. What the graph model
    reconstructs is not the fusion's business: it is the pipeline's ``train.target``
    (:mod:`stmm_core.pipeline.target`), which reads the fusion's modality weights (parameters ``img_weight``,
    ``gene_weight``, ``balance``) when it has them.
    """

    kind = "fusion"
    shapes = {"img": "(N, D_img) | None", "gene": "(N, D_gene)", "return": "(N, D_fused)"}
    #: the inputs the fusion reads (``"image"``, ``"gene"``); the default reconstruction target uses these
    modalities: ClassVar[tuple[str, ...]] = ("image", "gene")
    out_dim: int

    @abstractmethod
    def setup(self, d_img: int | None, d_gene: int) -> None: ...

    @classmethod
    def partition_support(cls, params: "BaseModel") -> PartitionSupport | None:
        """Graph hops the fusion looks across, and whether partition training is exact (None: undeclared)."""
        return None


@dataclass
class GraphContext:
    """The graph in the forms graph layers need, built once per fit on the training device."""

    edge_index: "torch.Tensor"  # (2, E) long, symmetric, no self loops
    n_nodes: int
    adj_norm: "torch.Tensor | None" = None  # sparse CSR D^-1/2 (A+I) D^-1/2, (N, N)
    # (N, L) standard-normal draws a variational model uses instead of fresh ones; mini-batch training sets it so
    # that every spot gets one draw per epoch whichever partitions (core or halo) it appears in
    noise: "torch.Tensor | None" = None
    # (N,) float32 number of distinct neighbours of each node in the WHOLE graph (self excluded). Set on a
    # partition's subgraph, where a halo node's outer edges are cut: a layer that normalises by degree must use it
    # (None: the degrees of edge_index are the true ones)
    degree: "torch.Tensor | None" = None
    # (N, D_in) the model input at a permutation of the whole section (contrastive negatives); set by partition
    # training for models that declare PartitionSupport(negatives=True); None: the model shuffles its own input
    negatives: "torch.Tensor | None" = None
    # derived forms of this graph a component builds once and reuses (e.g. another normalised adjacency),
    # keyed by the component's own names
    cache: dict[str, Any] = field(default_factory=dict)
    # (E,) float32 length of each edge of edge_index (full-resolution pixels); None where unknown
    distances: "torch.Tensor | None" = None
    # (E,) int16 SpatialGraph.rank of each edge of edge_index (full-batch training only); None where not ranked
    rank: "torch.Tensor | None" = None
    # (N, C) float32 per-spot covariates a model's decoder receives beside its latent code (e.g. the standardised
    # log library size: ``VGAEParams.decoder_covariates``); None where the model asks for none. Partition training
    # gives each partition its rows, like ``noise``
    covariates: "torch.Tensor | None" = None


@dataclass
class GraphModelOutput:
    z: "torch.Tensor"  # (N, L) sample (training) or mean (eval)
    mu: "torch.Tensor"  # (N, L)
    logvar: "torch.Tensor"  # (N, L)
    recon: "torch.Tensor"  # (N, D_t)
    embedding: "torch.Tensor | None" = None  # what the pipeline clusters; None = mu
    logits: "torch.Tensor | None" = None  # model-specific training scores (e.g. contrastive discriminators)

    def clustered(self) -> "torch.Tensor":
        """The embedding the pipeline returns and clusters: ``embedding`` if the model set one, else ``mu``."""
        return self.mu if self.embedding is None else self.embedding


class GraphModel(Component):
    """Fused features on a graph → latent embedding; owns its loss.

    ``forward(x, graph)``: ``x`` ``(N, D_in)`` → :class:`GraphModelOutput`. ``loss(out, target)`` returns a
    dict of named scalar terms plus ``"loss"`` (the total). ``embed`` returns the posterior mean ``(N, L)``.
    ``setup(d_in, d_target, n_nodes)`` sizes the layers. ``target`` is the fixed reconstruction target the
    pipeline chose (``train.target``), never the trainable fusion output. A model that can be trained over
    spatial partitions declares it with the classmethod :meth:`partition_support`.
    """

    kind = "graph_model"
    shapes = {"x": "(N, D_in)", "z": "(N, L)", "recon": "(N, D_target)"}
    latent_dim: int

    @abstractmethod
    def setup(self, d_in: int, d_target: int, n_nodes: int) -> None: ...

    @abstractmethod
    def loss(self, out: GraphModelOutput, target: "torch.Tensor") -> dict[str, "torch.Tensor"]: ...

    @classmethod
    def partition_support(cls, params: "BaseModel") -> PartitionSupport | None:
        """Receptive field in graph hops and whether partition training is exact (None: undeclared, so the
        model cannot be trained over partitions). See :class:`PartitionSupport`."""
        return None


class Decoder(Component):
    """Features or tokens → predicted expression ``(B, G_out)`` in a declared target space."""

    kind = "decoder"
    shapes = {"features": "(B, D) | (B, T, D)", "return": "(B, G_out)"}
    target_space: str = "log1p_normalised"


class Objective(Component):
    """A loss term: ``__call__(**tensors) -> dict[str, Tensor]`` with key ``"loss"``."""

    kind = "objective"


class Task(Component):
    """A downstream task on an embedding, e.g. clustering into K domains.

    ``run(embedding, n_domains, seed)``: float32 ``(N, L)`` → int64 labels ``(N,)`` in ``[0, K)``.
    """

    kind = "task"
    shapes = {"embedding": "(N, L) float32", "return": "(N,) int64"}

    @abstractmethod
    def run(self, embedding: "np.ndarray", n_domains: int, seed: int = 0) -> "np.ndarray": ...


KINDS: tuple[str, ...] = (
    "image_encoder",
    "gene_encoder",
    "fusion",
    "graph_builder",
    "graph_model",
    "decoder",
    "objective",
    "task",
)
