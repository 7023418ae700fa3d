"""The ``bleep`` family behind stmm's one pipeline interface (:class:`stmm_core.pipeline_base.Pipeline`).

``fit`` trains :class:`stmm_bleep.model.BleepModel` on one or several sections and writes the run folder through
the core's atomic writer: ``spec.json``, ``model.safetensors`` (``heads.*`` the projection heads, ``reference.*``
the training spots' expression embeddings and log1p targets; the spec hash in its metadata), ``preprocess.json``
(the fitted gene encoder, image-feature scaling, gene lists), ``bleep.json`` (training history), ``metrics.json``,
``loss.png``, then the core's model card and manifest, so ``stmm push``/``pull`` work as for every family.
``load`` reads a folder back through the core's verified reader. Capabilities: ``expression``, ``scoring``,
``embedding`` (see :class:`~stmm_bleep.model.BleepModel`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.pipeline_base import ExpressionPrediction, FitOutcome, FitRequest, Pipeline

if TYPE_CHECKING:  # pragma: no cover
    from stmm_bleep.model import BleepModel
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec

META_FILE = "bleep.json"


def _cache(enabled: bool = True) -> Any:
    from stmm_core.data.cache import FeatureCache

    return FeatureCache() if enabled else None


class BleepPipeline(Pipeline):
    """A trained ``bleep`` pipeline (``stmm fit`` / ``load_trained`` build it; the CLI and suites call it)."""

    family = "bleep"

    def __init__(self, spec: "PipelineSpec", path: Path | None = None, model: "BleepModel | None" = None) -> None:
        super().__init__(spec, path)
        self.model = model

    # -- fit ------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, spec: "PipelineSpec", request: FitRequest) -> FitOutcome:
        from stmm_bleep.model import BleepModel
        from stmm_core import __version__
        from stmm_core.atomic import atomic_dir
        from stmm_core.errors import StmmError
        from stmm_core.pipeline.outputs import check_output_dir
        from stmm_core.pipeline.run import load_section
        from stmm_core.seeding import configure_threads, resolve_device

        out_dir = check_output_dir(request.out_dir, overwrite=request.overwrite)
        device = resolve_device(request.device)
        threads = configure_threads()
        t0 = time.perf_counter()
        o = request.options  # only those in FamilyInfo.fit_options reach here
        if (o.get("image") or o.get("scale")) and len(request.data) > 1:
            raise StmmError("--image/--scale apply to a single --data section; give several sections as .h5ad files "
                            "that carry their images (uns['spatial']) or Space Ranger folders")
        sections = [load_section(p, image=o.get("image"), scale=o.get("scale"), counts_layer=o.get("counts_layer"))
                    for p in request.data]  # read, validated and filtered as every family reads a section
        model = BleepModel.fit(spec, sections, device=device, cache=_cache(request.use_cache), log=request.log)
        hist = model.meta["history"]
        best = min(hist, key=lambda h: h.get("val_loss", float("inf"))) if hist else {}
        metrics = {"stmm_version": __version__, "pipeline": spec.pipeline, "spec_hash": spec.hash(),
                   "seed": spec.train.seed, "device": device, "threads": threads,
                   "section": ", ".join(s.name for s in sections),
                   "sections": model.meta["sections"], "n_reference_spots": model.meta["n_reference"],
                   "genes": {"n_targets": len(model.targets), "n_eval_hvg": len(model.genes["eval_hvg"])},
                   "image_encoder": model.meta["image_encoder"],
                   "kept_epoch": best.get("epoch"), "final_loss": hist[-1]["loss"] if hist else None,
                   "timings": {**model.meta["timings"], "wall_seconds": time.perf_counter() - t0}}
        with atomic_dir(out_dir) as stage:
            cls._write(stage, spec, model, metrics)
        lines = [f"bleep: {len(sections)} training section(s), {model.meta['n_reference']} reference spots, "
                 f"{len(model.targets)} target genes; image encoder {model.meta['image_encoder']}",
                 f"  heads trained {len(hist)} epochs, kept epoch {best.get('epoch', len(hist))} (lowest validation "
                 f"loss); fit {metrics['timings']['wall_seconds']:.1f} s",
                 f"wrote {out_dir}/ ({', '.join(p.name for p in sorted(out_dir.iterdir()))})"]
        return FitOutcome(metrics, lines)

    @staticmethod
    def _write(folder: Path, spec: "PipelineSpec", model: "BleepModel", metrics: dict[str, Any]) -> None:
        from safetensors.numpy import save_file

        from stmm_core.hub.pipeline_dir import finish_pipeline_dir
        from stmm_core.plots import plot_loss

        tensors, pre = model.state()
        (folder / "spec.json").write_text(spec.pretty_json() + "\n")
        save_file(tensors, str(folder / "model.safetensors"),
                  metadata={"spec_hash": spec.hash(), "format": pre["format"]})
        (folder / "preprocess.json").write_text(json.dumps(pre) + "\n")
        (folder / META_FILE).write_text(json.dumps(model.meta, indent=1, default=float) + "\n")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
        if model.meta["history"]:
            plot_loss(model.meta["history"], folder / "loss.png")
        finish_pipeline_dir(folder, spec, metrics, sources=[])

    # -- load -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path, *, device: str = "cpu") -> "BleepPipeline":
        from stmm_bleep.model import BleepModel
        from stmm_core.hub.pipeline_dir import load_pipeline

        folder = Path(folder)
        loaded = load_pipeline(folder)  # manifest, hashes, spec, weights' spec hash and key prefixes verified
        meta_path = folder / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        tensors = {k: v.numpy() for k, v in loaded.state_dict.items()}
        model = BleepModel.from_state(loaded.spec, tensors, loaded.gene_state or {}, meta, device=device)
        return cls(loaded.spec, folder, model)

    # -- capabilities ---------------------------------------------------------------------------------
    def predict_expression(self, section: "Section", *, device: str = "cpu") -> ExpressionPrediction:
        p = self.spec.train
        values = self.model.predict_expression(section, cache=_cache())
        return ExpressionPrediction(values, self.model.targets, f"log1p(counts / total * {p.target_sum:g})",
                                    target_sum=float(p.target_sum), eval_genes=list(self.model.genes["eval_hvg"]),
                                    info={"k": p.k, "predict_temperature": p.predict_temperature,
                                          "n_reference": int(self.model.values.shape[0])})

    def score(self, section: "Section", *, device: str = "cpu") -> np.ndarray:
        return self.model.score_image_expression(section, cache=_cache())

    def embed(self, section: "Section", *, device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, dict]:
        return self.model.embed(section, cache=_cache()), {
            "n_spots": section.n_spots, "spec_hash": self.spec.hash(),
            "embedding": "image embedding in the shared image-expression space (unit length)"}
