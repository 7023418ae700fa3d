"""Generic benchmark hooks of a pipeline family, built on the interface only (fit, load, capabilities).

A family overrides :meth:`~stmm_core.pipeline_base.Pipeline.bench_fold`, ``bench_domains`` or ``bench_speed`` when
it measures more (per-stage times, its own retrieval heads); otherwise these run:

* :func:`generic_fold` — fit on the training sections into the fold folder, load, evaluate the held-out section
  with :func:`stmm_core.pipeline_eval.evaluate_section`;
* :func:`generic_domains` — fit on the section, embed it (capability ``embedding``), cluster with the ``gmm`` task;
* :func:`generic_speed` — wall time and peak RSS of one fit (this process is the suite's fresh subprocess).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec


def _fit(spec: "PipelineSpec", data: list[str], out_dir: Path, device: str) -> Any:
    from stmm_core.pipeline_base import FitRequest, fit_spec

    req = FitRequest(data=[Path(p) for p in data], out_dir=Path(out_dir), device=device, progress=False,
                     overwrite=True)
    return fit_spec(spec, req)


def generic_fold(cls: type, spec: "PipelineSpec", train: list[str], test: str, run_dir: Path, device: str,
                 method: str | None) -> dict[str, Any]:
    from stmm_core.benchmark.runner import NotApplicable
    from stmm_core.pipeline.run import load_section
    from stmm_core.pipeline_eval import evaluate_section, fold_metrics

    if method is not None:
        raise NotApplicable(f"the {spec.pipeline!r} pipeline family has no benchmark method {method!r}")
    t0 = time.perf_counter()
    _fit(spec, train, run_dir, device)
    fit_s = time.perf_counter() - t0
    pipe = cls.load(Path(run_dir))
    res = evaluate_section(pipe, load_section(test, image=None, keep_genes=True), device="cpu")
    details = {"fit_seconds": fit_s, "n_targets": (res.get("genes") or {}).get("n_targets"),
               "n_eval_hvg": (res.get("genes") or {}).get("n_eval_hvg"),
               "retrieval_scores": "top1/top5: the family's image-expression scores (else the prediction's Pearson "
                                   "r); *_decoder: Pearson r of the predicted profile"}
    return {"metrics": fold_metrics(res), "details": details}


def generic_domains(cls: type, spec: "PipelineSpec", path: str, section: "Section", label: str, device: str,
                    work_dir: Path) -> tuple["Section", np.ndarray, int, dict[str, Any]]:
    from stmm_core.pipeline.run import resolve_n_domains
    from stmm_core.pipeline_base import embed
    from stmm_core.plugins import get_catalogue

    n_domains = resolve_n_domains(section, None, label, flag="--label")
    seed = int(spec.train.seed)
    t0 = time.perf_counter()
    _fit(spec, [path], work_dir, device)
    fit_s = time.perf_counter() - t0
    x, info = embed(cls.load(Path(work_dir)), section, what="the domains suite")
    labels = np.asarray(get_catalogue().get("task", "gmm").build({}).run(x, n_domains, seed), dtype=np.int64)
    return section, labels, n_domains, {"embedding": f"{spec.pipeline} embedding ({x.shape[1]}-d), GMM (default "
                                                     "params)", "fit_seconds": fit_s, "spec_hash": spec.hash()}


def generic_speed(cls: type, spec: "PipelineSpec", path: str, label: str | None, device: str) -> dict[str, Any]:
    from stmm_core.profiling import current_rss_bytes

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = _fit(spec, [path], Path(tmp) / "run", device)
    total = time.perf_counter() - t0
    return {"metrics": {"total_s": total, "peak_rss_mb": current_rss_bytes() / 2**20},
            "details": {"note": "one fit timed as a whole (the family reports no stages); peak_rss_mb is the RSS at "
                                "the end", "fit_metrics_keys": sorted(outcome.metrics)}}


def family_notes(ctx: Any, suite: str) -> list[str]:
    """The report lines (:attr:`stmm_core.family.FamilyInfo.notes`) of the families whose rows are in *suite*."""
    from stmm_core.pipeline_base import family_of

    seen: list[str] = []
    for p in ctx.pipelines:
        if p.spec is None or getattr(p, "method", None) is not None:
            continue
        try:
            note = family_of(p.spec).notes.get(suite)
        except Exception:  # noqa: BLE001 - a family that vanished: its rows say so
            continue
        if note and note not in seen:
            seen.append(note)
    return seen
