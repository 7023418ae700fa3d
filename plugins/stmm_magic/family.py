"""Magic behind the core's pipeline interface (:class:`stmm_core.pipeline_base.Pipeline`).

``fit``: :func:`stmm_magic.pipeline.fit_magic` on one or several sections (``--stage 1|2`` trains one stage),
then the model card and manifest (the run folder is a saved pipeline: ``stmm push``/``pull``). ``load``: the
run folder's stages (:func:`stmm_magic.run_io.load_run`). Capabilities: ``expression`` (stage-2 decoder,
log1p-normalised targets), ``scoring`` (stage-1 contrastive image × gene similarity), ``embedding``
(stage-1 unit image and gene embeddings, concatenated).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.pipeline_base import ExpressionPrediction, FitOutcome, FitRequest, Pipeline

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec
    from stmm_magic.run_io import MagicRun


class MagicPipeline(Pipeline):
    family = "magic"

    def __init__(self, spec: "PipelineSpec", path: Path | None = None, run: "MagicRun | None" = None):
        super().__init__(spec, path)
        self.run = run

    # -- fit ------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, spec: "PipelineSpec", request: FitRequest) -> FitOutcome:
        from stmm_magic.pipeline import fit_magic
        from stmm_magic.run_io import finish_run

        o = request.options  # only those in FamilyInfo.fit_options reach here (stmm_core.pipeline_base.check_options)
        meta = fit_magic(spec, request.data, request.out_dir, stage=o.get("stage"), device=request.device,
                         use_cache=request.use_cache, log=request.log, overwrite=request.overwrite)
        if meta.get("rank", 0) != 0:  # data-parallel helper process: rank 0 reports and writes
            return FitOutcome(meta, [], int(meta["rank"]))
        metrics = finish_run(request.out_dir, spec, meta)
        return FitOutcome(metrics, summary_lines(meta, request.out_dir))

    # -- load -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path, *, device: str = "cpu") -> "MagicPipeline":
        from stmm_magic.run_io import STAGE_FILES, load_run

        folder = Path(folder)
        stages = tuple(s for s in (1, 2) if (folder / STAGE_FILES[s]).is_file())
        run = load_run(folder, stages=stages or (2,), device=device)
        return cls(run.spec, folder, run)

    # -- capabilities ---------------------------------------------------------------------------------
    def _tiles(self, section: "Section", cache: Any = None):
        import torch

        from stmm_magic.data import section_tiles, tile_size_fullres
        from stmm_magic.pipeline import image_input_px

        spec = self.spec
        size = tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
        return torch.from_numpy(section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value, cache))

    def _need(self, stage: int, what: str) -> Any:
        from stmm_core.errors import StmmError

        model = self.run.stage1 if stage == 1 else self.run.stage2
        if model is None:
            raise StmmError(f"{self.path} has no stage-{stage} weights, which {what} needs; train it with "
                            f"'stmm fit SPEC --data … -o {self.path} --stage {stage}'")
        return model

    def predict_expression(self, section: "Section", *, device: str = "cpu") -> ExpressionPrediction:
        model = self._need(2, "expression prediction")
        pred = model.predict(self._tiles(section)).numpy().astype(np.float32)
        target_sum = float(self.spec.components["decoder"].params["target_sum"])
        return ExpressionPrediction(pred, list(self.run.targets), "log1p(counts / total * %g)" % target_sum,
                                    target_sum=target_sum, eval_genes=list(self.run.eval_hvg))

    def _embeddings(self, section: "Section") -> dict[str, Any]:
        import torch

        model = self._need(1, "the image and gene embeddings")
        tokens = torch.from_numpy(model.gene.tokenize(section))
        return model.embed(self._tiles(section), tokens)

    def score(self, section: "Section", *, device: str = "cpu") -> np.ndarray:
        emb = self._embeddings(section)
        return (emb["image"] @ emb["gene"].T).numpy().astype(np.float64)

    # -- Magic's own evaluation, prediction files and benchmark measurements -----------------------------
    def evaluate(self, data: Path, *, device: str = "cpu", options: dict[str, Any] | None = None,
                 log: Any = None) -> tuple[dict[str, Any], list[str]]:
        from stmm_magic.evaluate import evaluate_run, summary_lines as eval_lines

        o = options or {}
        res = evaluate_run(self.path, data, allow_missing_genes=bool(o.get("allow_missing_genes")),
                           itm_k=int(o.get("itm_k", 16)), use_cache=o.get("use_cache", True), log=log,
                           allow_training=bool(o.get("allow_training")))
        return res, eval_lines(res)

    def predict_to_file(self, output: Path, *, data: Path | None = None, device: str = "cpu",
                        options: dict[str, Any] | None = None, log: Any = None) -> dict[str, Any]:
        from stmm_magic.predict import predict_to_file

        o = dict(options or {})
        return predict_to_file(self.path, output, data=data, image=o.get("image"), scale=o.get("scale"),
                               coords=o.get("coords"), tile_px=o.get("tile_px"), genes=o.get("genes"),
                               use_cache=o.get("use_cache", True), log=log)

    @classmethod
    def bench_fold(cls, spec: "PipelineSpec", train: list[str], test: str, run_dir: Path, device: str,
                   method: str | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
        from stmm_magic import bench

        if method is not None:  # a feature baseline sharing Magic's spec (hest-ridge, ridge-cv, …)
            stage1 = None
            if method == "stage1-ridge":  # ablation: reads the stage 1 of a magic row of the same work folder
                from stmm_magic.ablation import magic_runs_in

                ctx = context or {}
                reuse = magic_runs_in(Path(ctx["work_dir"]), ctx["seed"], ctx["held"]) if ctx.get("work_dir") else []
                stage1 = (Path(run_dir), reuse)
            return bench.feature_fold(spec, train, test, device, method, stage1)
        return bench.magic_fold(spec, train, test, Path(run_dir), device)

    @classmethod
    def bench_domains(cls, spec: "PipelineSpec", path: str, read: Any, label: str, device: str,
                      work_dir: Path) -> tuple["Section", np.ndarray, int, dict[str, Any]]:
        from stmm_magic import bench

        return bench.domains(spec, path, label, device, Path(work_dir))

    @classmethod
    def bench_speed(cls, spec: "PipelineSpec", path: str, label: str | None, device: str) -> dict[str, Any]:
        from stmm_magic import bench

        return bench.speed(spec, path, device)

    def embed(self, section: "Section", *, device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, dict]:
        import torch

        emb = self._embeddings(section)
        x = torch.cat([emb["image"], emb["gene"]], dim=1).numpy().astype(np.float32)
        return x, {"n_spots": section.n_spots, "spec_hash": self.spec.hash(),
                   "embedding": "stage-1 unit image + gene embeddings, concatenated"}


def summary_lines(meta: dict[str, Any], output: Path) -> list[str]:
    """What ``stmm fit``/``run`` print after a magic fit."""
    t = meta["timings"]
    g = meta["genes"]
    init = meta.get("image_init", {}).get("source", "?")
    lines = [f"magic: {len(meta.get('sections_stage1') or meta.get('sections_stage2') or [])} training "
             f"section(s); {len(g['input'])} input genes, {len(g['targets'])} targets; image encoder "
             f"{meta.get('image_model')} ({init} init)"]
    for key in ("stage1_seconds", "stage2_seconds"):
        if key in t:
            lines.append(f"  {key.replace('_seconds', ''):<8} {t[key]:7.1f} s")
    files = ["spec.json", "magic.json"] + [p.name for p in sorted(Path(output).glob("*.safetensors"))]
    files += [f for f in ("metrics.json", "README.md", "manifest.json") if (Path(output) / f).is_file()]
    lines.append(f"wall time {t['wall_seconds']:.1f} s; wrote {output}/ ({', '.join(files)})")
    return lines

