"""The ``bleep`` model: fit on sections, predict expression by retrieval, score image–expression pairs, save.

What it reuses from stmm by name: the spec's ``image`` slot (any image encoder in the catalogue, used frozen;
features cut and cached by stmm's own tile code) and ``gene`` slot (any gene encoder with ``fit``/``transform``
and a JSON ``state``/``load_state``, e.g. ``hvg``). What it adds: two projection heads trained with BLEEP's
contrastive loss (:mod:`stmm_bleep.heads`) and a reference set — the training spots' expression embeddings and
their log1p target expression — from which predictions are retrieved (:mod:`stmm_bleep.retrieve`).

*spec* is a :class:`stmm_core.spec.PipelineSpec` of the ``bleep`` family (``train``: :class:`stmm_bleep.params.
BleepTrainParams`). The run folder and the stmm interface are in :mod:`stmm_bleep.family`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from stmm_core.errors import DataError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_bleep.heads import BleepHeads
    from stmm_core.data.section import Section

FORMAT = "stmm-bleep-v1"
Log = Callable[[str], None]


def build_component(spec: Any, slot: str) -> Any:
    """The component in *slot* of *spec*, built by stmm's one component builder (from the local catalogue)."""
    from stmm_core.pipeline_base import build_component as build

    comp = build(spec, slot)
    if comp is None:
        raise SpecError(f"the bleep pipeline needs a component in its {slot!r} slot")
    return comp


def _check_gene_encoder(enc: Any) -> None:
    missing = [m for m in ("fit", "transform", "state", "load_state") if not callable(getattr(enc, m, None))]
    if missing:
        raise SpecError(f"the bleep pipeline's gene slot needs a gene encoder with a saved state (e.g. hvg); "
                        f"{type(enc).__name__} lacks {', '.join(missing)}")


class BleepModel:
    """A trained BLEEP-style model. Build it with :meth:`fit` or :meth:`from_state`.

    Shapes: ``predict_expression(section) -> (N, G)`` float32 log1p expression of :attr:`targets`;
    ``score_image_expression(section) -> (N, N)`` cosine similarity of spot i's image and spot j's expression;
    ``embed(section) -> (N, embed_dim)`` the image embedding in the shared space (L2-normalised).
    """

    def __init__(self, spec: Any, image_encoder: Any, gene_encoder: Any, heads: "BleepHeads",
                 image_mean: np.ndarray, image_std: np.ndarray, genes: dict[str, list[str]],
                 reference: np.ndarray, values: np.ndarray, meta: dict[str, Any], device: str = "cpu") -> None:
        self.spec, self.image_encoder, self.gene_encoder, self.heads = spec, image_encoder, gene_encoder, heads
        self.image_mean, self.image_std = image_mean, image_std
        self.genes, self.reference, self.values, self.meta, self.device = genes, reference, values, meta, device

    @property
    def targets(self) -> list[str]:
        return list(self.genes["targets"])

    # ---------------------------------------------------------------------------------------------- features
    def _image_features(self, section: "Section", cache: Any = None) -> np.ndarray:
        from stmm_core.pipeline.image_features import encode_section

        if section.image is None or section.image_scale is None:
            raise DataError(f"section {section.name!r} has no H&E image (or no scale factor); the bleep pipeline "
                            "reads image tiles: give an .h5ad with its image, or --image with --scale")
        feats, _ = encode_section(section, self.image_encoder, self.spec.tiles, device=self.device, cache=cache,
                                  progress=False)
        return np.asarray(feats, dtype=np.float32)

    def _z_image(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self.image_mean) / self.image_std).astype(np.float32)

    def _embed(self, x: np.ndarray, branch: str) -> np.ndarray:
        import torch

        with torch.no_grad():
            f = self.heads.embed_image if branch == "image" else self.heads.embed_gene
            return f(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    # ---------------------------------------------------------------------------------------------- capabilities
    def embed(self, section: "Section", cache: Any = None) -> np.ndarray:
        """``(N, embed_dim)`` image embeddings of the section's spots (the shared space; no expression read)."""
        return self._embed(self._z_image(self._image_features(section, cache)), "image")

    def predict_expression(self, section: "Section", cache: Any = None) -> np.ndarray:
        """``(N, len(targets))`` predicted log1p expression: the similarity-weighted mean of the ``k`` training
        spots whose expression embeddings are nearest to each spot's image embedding."""
        from stmm_bleep.retrieve import knn_predict

        p = self.spec.train
        return knn_predict(self.embed(section, cache), self.reference, self.values, p.k, p.predict_temperature)

    def score_image_expression(self, section: "Section", cache: Any = None) -> np.ndarray:
        """``(N, N)`` scores: row i = spot i's image, column j = spot j's expression (cosine in the shared space)."""
        from stmm_bleep.retrieve import cosine_scores

        expr = self._embed(self.gene_encoder.transform(section), "gene")
        return cosine_scores(self.embed(section, cache), expr)

    # ---------------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, spec: Any, sections: Sequence["Section"], *, device: str = "cpu", cache: Any = None,
            log: Log | None = None) -> "BleepModel":
        """Train on *sections* (one or several; genes matched by name). Seeded by ``spec.train.seed``."""
        from stmm_bleep.genes import choose_targets, log1p_targets
        from stmm_bleep.train import train_heads
        from stmm_core.seeding import seed_everything

        log = log or (lambda msg: None)
        p = spec.train
        t0 = time.perf_counter()
        if not sections:
            raise DataError("no --data given; pass one or more training sections")
        genes = choose_targets(sections, p.n_targets, min(p.n_eval_hvg, p.n_targets), p.target_sum)
        seed_everything(p.seed)
        image_encoder = build_component(spec, "image")  # random weights: seeded, rebuilt alike on load
        gene_encoder = build_component(spec, "gene")
        _check_gene_encoder(gene_encoder)
        gene_encoder.fit(_combined(sections))
        model = cls(spec, image_encoder, gene_encoder, None, np.zeros(1, np.float32), np.ones(1, np.float32), genes,
                   np.empty((0, 0), np.float32), np.empty((0, 0), np.float32), {}, device)
        raw = np.concatenate([model._image_features(s, cache) for s in sections])
        model.image_mean = raw.mean(0).astype(np.float32)
        std = raw.std(0)
        model.image_std = np.where(std < 1e-8, 1.0, std).astype(np.float32)
        x_img = model._z_image(raw)
        x_gene = np.concatenate([np.asarray(gene_encoder.transform(s), np.float32) for s in sections])
        values = np.concatenate([log1p_targets(s, genes["targets"], p.target_sum) for s in sections])
        t_feat = time.perf_counter() - t0
        log(f"{len(sections)} section(s), {len(x_img)} spots: image features {x_img.shape[1]}, gene features "
            f"{x_gene.shape[1]}, {len(genes['targets'])} targets ({t_feat:.1f} s)")
        seed_everything(p.seed)
        heads, history = train_heads(x_img, x_gene, p, log=log)
        model.heads = heads
        model.reference, model.values = model._embed(x_gene, "gene"), values
        model.meta = {"format": FORMAT, "history": history, "n_reference": int(len(values)),
                     "sections": [{"name": s.name, "n_spots": s.n_spots} for s in sections],
                     "image_encoder": image_encoder.identity(),
                     "timings": {"features_seconds": t_feat, "fit_seconds": time.perf_counter() - t0}}
        return model

    # ---------------------------------------------------------------------------------------------- state
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(tensors, preprocess)``: the arrays for ``model.safetensors`` (``heads.*`` the trained heads,
        ``reference.*`` the retrieval set) and the JSON-able preprocessing state (``preprocess.json``)."""
        tensors = {f"heads.{k}": v.detach().cpu().numpy() for k, v in self.heads.state_dict().items()}
        tensors.update({"reference.embedding": self.reference, "reference.values": self.values})
        pre = {"format": FORMAT, "genes": self.genes, "gene_encoder": self.gene_encoder.state(),
               "image": {"mean": self.image_mean.tolist(), "std": self.image_std.tolist(),
                         "identity": self.image_encoder.identity()},
               "dims": {"image": int(self.image_mean.shape[0]), "gene": int(self.heads.gene.projection.in_features),
                        "embed": int(self.heads.image.norm.normalized_shape[0])}}
        return {k: np.ascontiguousarray(v) for k, v in tensors.items()}, pre

    @classmethod
    def from_state(cls, spec: Any, tensors: dict[str, np.ndarray], pre: dict[str, Any],
                   meta: dict[str, Any] | None = None,
                   *, device: str = "cpu") -> "BleepModel":
        """Rebuild the model written by :meth:`state` for *spec* (the same outputs, in this or a fresh process)."""
        import torch

        from stmm_bleep.heads import BleepHeads
        from stmm_core.seeding import seed_everything

        if not isinstance(pre, dict) or pre.get("format") != FORMAT:
            found = pre.get("format") if isinstance(pre, dict) else type(pre).__name__
            raise DataError(f"not a bleep preprocessing state (format {found!r}, expected {FORMAT!r}); re-fit it")
        seed_everything(spec.train.seed)
        image_encoder = build_component(spec, "image")  # random weights: the same seeded draw as in fit
        if image_encoder.identity() != pre["image"]["identity"]:
            raise DataError(f"the image encoder built from the spec ({image_encoder.identity()}) is not the one this "
                            f"model was trained with ({pre['image']['identity']}); use the run's own spec.json")
        gene_encoder = build_component(spec, "gene")
        _check_gene_encoder(gene_encoder)
        gene_encoder.load_state(pre["gene_encoder"])
        d = pre["dims"]
        heads = BleepHeads(d["image"], d["gene"], d["embed"], spec.train.dropout)
        heads.load_state_dict({k[len("heads."):]: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()
                               if k.startswith("heads.")}, strict=True)
        heads.eval()
        return cls(spec, image_encoder, gene_encoder, heads, np.asarray(pre["image"]["mean"], np.float32),
                   np.asarray(pre["image"]["std"], np.float32), pre["genes"],
                   np.asarray(tensors["reference.embedding"], np.float32),
                   np.asarray(tensors["reference.values"], np.float32), dict(meta or {}), device)


def _combined(sections: Sequence["Section"]) -> "Section":
    """One section of all training spots (shared genes) for fitting the gene encoder."""
    if len(sections) == 1:
        return sections[0]
    from stmm_core.pipeline.multi_section import combine_sections

    return combine_sections(sections)
