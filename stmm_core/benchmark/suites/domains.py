"""Suite ``domains``: ARI and NMI against a label column, K taken from the labels, over seeds.

Each pipeline's family clusters the section (:meth:`stmm_core.pipeline_base.Pipeline.bench_domains`): by
default it is fitted on the section, its embedding (capability ``embedding``) clustered with the ``gmm`` task;
graph-fusion fits as ``stmm fit`` does, magic clusters its stage-1 embedding (see each family's bench module).
Peer-package recipes (``domains_method``) run the package itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.benchmark.runner import Context, Metrics, NotApplicable, Unit
from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.benchmark.datasets import ResolvedDataset
    from stmm_core.benchmark.pipelines import BenchPipeline

METRICS = ["ari", "nmi"]
PRIMARY = "ari"
HIGHER_IS_BETTER = {"ari": True, "nmi": True}
DEFAULT_DATASETS = ["dlpfc-151676"]
DEFAULT_PIPELINES = ["stereomm", "stereomm-expression", "graphst", "magic", "expression-gmm", "expression-leiden",
                     "image-gmm"]
DEFAULT_SEEDS = 3


def describe(m: Metrics) -> str:
    return f"ARI {m.get('ari') or 0:.3f}  NMI {m.get('nmi') or 0:.3f}"


def _section(ctx: Context, ds: "ResolvedDataset") -> Any:
    from stmm_core.pipeline.run import load_section

    cache = ctx.store.setdefault("sections", {})
    if ds.name not in cache:
        cache[ds.name] = load_section(ds.local_path)
    return cache[ds.name]


def _remember_map(ctx: Context, pipe: str, ds: "ResolvedDataset", seed: int, coords: np.ndarray,
                  labels: np.ndarray, truth: np.ndarray, ari: float, section: Any = None) -> None:
    maps = ctx.store.setdefault("maps", {})
    key = (ds.name, pipe)
    if key not in maps:  # the first seed of each pipeline
        maps[key] = {"coords": np.asarray(coords), "labels": np.asarray(labels), "truth": np.asarray(truth),
                     "seed": seed, "ari": ari, "background": _background(ctx, ds, section)}


def _background(ctx: Context, ds: "ResolvedDataset", section: Any) -> dict[str, Any] | None:
    """The section's H&E (downsampled, once per dataset) for the domain maps."""
    from stmm_core.plots import _background as view_of, microns_per_px

    cache = ctx.store.setdefault("backgrounds", {})
    if ds.name not in cache:
        cache[ds.name] = None
        if section is not None and getattr(section, "image", None) is not None:
            view, factor = view_of(section, max_side=800)
            if view is not None:
                cache[ds.name] = {"view": view, "factor": factor, "um_per_px": microns_per_px(section)}
    return cache[ds.name]


def _family(ctx: Context, pipe: "BenchPipeline", ds: "ResolvedDataset", seed: int) -> tuple[Metrics, dict]:
    """The pipeline's family clusters the section (:meth:`stmm_core.pipeline_base.Pipeline.bench_domains`)."""
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline_base import family_of, implementation

    fam = family_of(pipe.spec)
    if not fam.has("embedding"):
        raise NotApplicable(f"the {fam.name!r} pipeline family offers no per-spot embedding to cluster")
    label = ds.descriptor.label
    spec = pipe.spec.with_overrides({"train.seed": seed})
    work = Path(ctx.work_dir) / "domains" / f"{pipe.name}-{spec.hash()[:12]}" / ds.name
    section, labels, k, extra = implementation(spec).bench_domains(spec, ds.local_path, lambda: _section(ctx, ds), label,
                                                                   ctx.device, work)
    truth = section.obs[label].to_numpy()
    scores = clustering_scores(truth, labels)
    _remember_map(ctx, pipe.name, ds, seed, section.coords, labels, truth, scores["ari"], section)
    return {"ari": scores["ari"], "nmi": scores["nmi"]}, {"k": k, "n_labelled": scores["n_labelled"], **extra}


def _peer_package(ctx: Context, pipe: "BenchPipeline", ds: "ResolvedDataset", seed: int) -> tuple[Metrics, dict]:
    """A recipe whose ``domains_method`` (``module:function``) runs a peer package on the section; its embedding
    is clustered by the recipe spec's own task (the same gmm as stmm's recipes), K from the labels."""
    import importlib

    from stmm_core.metrics import clustering_scores
    from stmm_core.plugins import get_catalogue
    from stmm_core.pipeline.run import resolve_n_domains

    label = ds.descriptor.label
    section = _section(ctx, ds)
    k = resolve_n_domains(section, None, label, flag="--label")
    module, _, attr = pipe.domains_method.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    task_ref = pipe.spec.components["task"]
    task = get_catalogue().get("task", task_ref.name).build(task_ref.params)
    t0 = time.perf_counter()
    labels, info = fn(section, n_domains=k, seed=seed, task=task, device=ctx.device)
    fit_s = time.perf_counter() - t0
    truth = section.obs[label].to_numpy()
    scores = clustering_scores(truth, labels)
    _remember_map(ctx, pipe.name, ds, seed, section.coords, labels, truth, scores["ari"], section)
    unrefined = info.pop("unrefined_labels", None)
    details = {"k": k, "n_labelled": scores["n_labelled"], "fit_seconds": round(fit_s, 2), "task": task_ref.name,
               "task_params": dict(task_ref.params), **info}
    if unrefined is not None:
        details["ari_before_refine"] = clustering_scores(truth, unrefined)["ari"]
    return {"ari": scores["ari"], "nmi": scores["nmi"]}, details


def units(ctx: Context) -> list[Unit]:
    for ds in ctx.datasets:
        if not ds.descriptor.label:
            raise DataError(f"the domains suite needs ground-truth labels: dataset {ds.name!r} has no label column; "
                            "pass --label COLUMN")
    out = []
    for ds in ctx.datasets:
        for pipe in ctx.pipelines:
            for seed in ctx.seeds:
                def fn(pipe=pipe, ds=ds, seed=seed) -> tuple[Metrics, dict]:
                    if pipe.domains_method is not None:
                        return _peer_package(ctx, pipe, ds, seed)
                    if pipe.method is not None:
                        raise NotApplicable(f"{pipe.method} predicts expression; it does not cluster domains")
                    return _family(ctx, pipe, ds, seed)
                out.append(Unit(pipe, ds.name, None, seed, fn))
    return out


def notes(ctx: Context) -> list[str]:
    out = ["K = number of distinct labels; unlabelled spots are excluded from ARI/NMI (they are still clustered)."]
    if any(p.spec is not None and p.spec.domains.consensus > 1 for p in ctx.pipelines):
        out.append("RECIPE+consensusN rows: each run is the consensus of N seeds (run seed s uses seeds s*N … "
                   "s*N+N-1, so runs share no fit), labels aligned by Hungarian matching and voted per spot (-embedding: "
                   "the seeds' embeddings clustered together; -coassoc: spectral clustering of how often the seeds "
                   "put two spots together); its ± is the spread over disjoint seed sets (details: seed-to-seed ARI "
                   "and each member's ARI).")
    if any(p.domains_method for p in ctx.pipelines):
        out.append("*-package rows run the peer package itself (pip install .[peers]) on the same section, seed and "
                   "K; its embedding is clustered by the same gmm task as stmm's recipes (tied covariance, the "
                   "pure-Python stand-in for R mclust EEE); graphst-package then applies the package's own "
                   "refine_label(radius=50) (details: ari_before_refine).")
    from stmm_core.benchmark.family_bench import family_notes

    return out + family_notes(ctx, "domains")
