"""The graph-fusion family behind the core's pipeline interface (:class:`stmm_core.pipeline_base.Pipeline`).

``fit``: :func:`stmm_graph_fusion.run.fit_to_dir` (one or several sections → a run folder with result.h5ad,
model.safetensors, preprocess.json, metrics, plots, model card, manifest). ``load``: the verified folder
(:func:`stmm_core.hub.pipeline_dir.load_pipeline`). Capability ``embedding``: the posterior mean of the graph
model, recomputed from the saved weights (bit for bit on the fitted section with the fit's thread count).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.pipeline_base import FitOutcome, FitRequest, Pipeline

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.hub.pipeline_dir import LoadedPipeline
    from stmm_core.spec import PipelineSpec


class GraphFusionPipeline(Pipeline):
    family = "graph-fusion"

    def __init__(self, spec: "PipelineSpec", path: Path | None = None, loaded: "LoadedPipeline | None" = None):
        super().__init__(spec, path)
        self.loaded = loaded

    @classmethod
    def fit(cls, spec: "PipelineSpec", request: FitRequest) -> FitOutcome:
        from stmm_core.errors import StmmError
        from stmm_graph_fusion.run import fit_to_dir, summary_lines

        o = dict(request.options)
        consensus, batch_correct = o.get("consensus"), o.get("batch_correct")
        if consensus is not None:
            spec = spec.with_overrides({"domains.consensus": consensus})
        if batch_correct not in (None, "none", "harmony"):
            raise StmmError(f"--batch-correct {batch_correct!r}: use harmony or none")
        data: Any = request.data[0] if len(request.data) == 1 else list(request.data)
        metrics = fit_to_dir(spec, data, request.out_dir, n_domains=o.get("n_domains"), labels=o.get("labels"),
                             device=request.device, image=o.get("image"), scale=o.get("scale"),
                             use_cache=request.use_cache, progress=request.progress, coords=o.get("coords"),
                             counts_layer=o.get("counts_layer"), bin_size=o.get("bin_size"), region=o.get("region"),
                             zarr=bool(o.get("zarr")), overwrite=request.overwrite,
                             markers=50 if o.get("markers") is None else o["markers"], batch_correct=batch_correct)
        rank = int(metrics.get("rank", 0))
        return FitOutcome(metrics, [] if rank else summary_lines(metrics, request.out_dir), rank)

    @classmethod
    def fit_section(cls, spec: "PipelineSpec", section: "Section", **kwargs: Any) -> Any:
        from stmm_graph_fusion.fit import fit_graph_fusion

        return fit_graph_fusion(spec, section, **kwargs)

    @classmethod
    def load(cls, folder: Path, *, device: str = "cpu") -> "GraphFusionPipeline":
        from stmm_core.hub.pipeline_dir import load_pipeline

        return cls.from_loaded(load_pipeline(Path(folder)))

    @classmethod
    def from_loaded(cls, loaded: "LoadedPipeline") -> "GraphFusionPipeline":
        return cls(loaded.spec, loaded.path, loaded)

    def embed(self, section: "Section", *, device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, dict]:
        from stmm_graph_fusion.embed import embed_section

        return embed_section(self.loaded, section, device=device, progress=progress)

    @classmethod
    def bench_domains(cls, spec: "PipelineSpec", path: str, read: Any, label: str, device: str,
                      work_dir: Path) -> tuple["Section", np.ndarray, int, dict[str, Any]]:
        from stmm_graph_fusion import bench

        return bench.domains(spec, path, read(), label, device)

    @classmethod
    def bench_speed(cls, spec: "PipelineSpec", path: str, label: str | None, device: str) -> dict[str, Any]:
        from stmm_graph_fusion import bench

        return bench.speed(spec, path, label, device)
