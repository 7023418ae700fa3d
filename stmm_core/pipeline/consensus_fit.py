"""Fit one graph-fusion spec with several seeds (in parallel processes when cores allow) and keep the consensus.

``stmm fit/run --consensus N`` and the spec setting ``domains.consensus`` land here. Seed ``s`` of an N-seed
consensus fits seeds ``s*N … s*N+N-1`` (:func:`stmm_core.pipeline.consensus.consensus_seeds`). The returned
:class:`FitResult` carries the consensus labels, the per-spot confidence and the seed-to-seed agreement; its
embedding and weights are those of the member closest to the consensus (``representative_seed``).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.pipeline.result import FitResult
    from stmm_core.spec import PipelineSpec


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def plan_processes(n: int, threads: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(processes, threads per process) for *n* fits: as many processes as cores allow at *threads* each
    (``STMM_THREADS``; unset: one thread per process, one process per core)."""
    cores = cores or available_cores()
    if threads is None:
        env = os.environ.get("STMM_THREADS", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else 1
    procs = max(1, min(n, cores // max(1, threads)))
    return procs, max(1, threads)


def _fit_member(spec_json: str, seed: int, n_domains: int | None, device: str, threads: int,
                load: dict[str, Any], kwargs: dict[str, Any], use_cache: bool = False) -> "FitResult":
    """One member in a worker process: read the section, fit with *seed* (no progress bars)."""
    from stmm_core.pipeline.run import load_section
    from stmm_core.pipeline_base import implementation
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    import json

    configure_threads(threads)
    spec = parse_spec(json.loads(spec_json)).with_overrides({"train.seed": seed, "domains.consensus": 1})
    fit_graph_fusion = implementation(spec).fit_section  # the family's one-section fit
    if "sections" in load:  # several sections in one fit
        from stmm_core.pipeline.multi_section import load_sections

        section = load_sections(load["sections"])
    else:
        section = load_section(**load)
    cache = None
    if use_cache:  # the image features of the section are encoded once and read back by the other seeds
        from stmm_core.data.cache import FeatureCache

        cache = FeatureCache()
    return fit_graph_fusion(spec, section, n_domains=n_domains, device=device, cache=cache, progress=False,
                            **kwargs)


def fit_seeds(spec: "PipelineSpec", section: "Section", seeds: list[int], *, n_domains: int | None,
              device: str = "cpu", cache: Any | None = None, load: dict[str, Any] | None = None,
              processes: int | None = None, progress: bool = True,
              fit_kwargs: dict[str, Any] | None = None) -> tuple[list["FitResult"], dict[str, Any]]:
    """Fit *spec* once per seed. With ``load`` (the arguments of :func:`stmm_core.pipeline.run.load_section`)
    and more than one process, the fits run in a pool of fresh processes that each read the section; otherwise
    one after another in this process. ``fit_kwargs``: further arguments of :func:`fit_graph_fusion`."""
    from stmm_core.pipeline_base import implementation
    from stmm_core.progress import progress_bar

    fit_graph_fusion = implementation(spec).fit_section  # the family's one-section fit
    threads_env = os.environ.get("STMM_THREADS", "").strip()
    procs, threads = plan_processes(len(seeds)) if processes is None else (processes, 1)
    if load is None or device != "cpu":
        procs = 1
    base = spec.with_overrides({"domains.consensus": 1})
    results: list[Any] = [None] * len(seeds)
    with progress_bar(total=len(seeds), desc="consensus seeds", unit="fit", enabled=progress) as bar:
        if procs <= 1:
            for i, s in enumerate(seeds):
                results[i] = fit_graph_fusion(base.with_overrides({"train.seed": s}), section, n_domains=n_domains,
                                              device=device, cache=cache, progress=False, **(fit_kwargs or {}))
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            spec_json = base.canonical_json()
            with ProcessPoolExecutor(max_workers=procs, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(_fit_member, spec_json, s, n_domains, device, threads, load, fit_kwargs or {},
                                    cache is not None): i
                        for i, s in enumerate(seeds)}
                import scipy.optimize  # noqa: F401  (the consensus step's imports load while the workers fit)
                import sklearn.metrics  # noqa: F401

                for fut in as_completed(futs):
                    results[futs[fut]] = fut.result()
                    bar.update(1)
    plan = {"processes": procs, "threads_per_process": threads if procs > 1 else None,
            "stmm_threads": threads_env or None}
    return results, plan


def fit_consensus(spec: "PipelineSpec", section: "Section", *, n_domains: int | None, device: str = "cpu",
                  cache: Any | None = None, load: dict[str, Any] | None = None, processes: int | None = None,
                  progress: bool = True, fit_kwargs: dict[str, Any] | None = None) -> "FitResult":
    """Fit ``spec.domains.consensus`` seeds and return their consensus as one :class:`FitResult`."""
    from stmm_core.pipeline.consensus import consensus_labels, consensus_seeds
    from stmm_core.profiling import StageProfiler

    n = spec.domains.consensus
    if n < 2:
        raise StmmError("fit_consensus needs domains.consensus ≥ 2 (--consensus N)")
    if n_domains is None:
        raise StmmError("--consensus needs domains: give --n-domains K (or --labels COLUMN to take K from it)")
    seeds = consensus_seeds(spec.train.seed, n)
    prof = StageProfiler()
    t0 = time.perf_counter()
    with prof.stage(f"fit {n} seeds"):
        members, plan = fit_seeds(spec, section, seeds, n_domains=n_domains, device=device, cache=cache, load=load,
                                  processes=processes, progress=progress, fit_kwargs=fit_kwargs)
    with prof.stage("consensus"):
        if spec.domains.consensus_mode == "embedding":  # cluster the members' embeddings side by side
            from stmm_core.pipeline.consensus_embed import consensus_embedding

            k = n_domains if isinstance(n_domains, int) else max(int(m.labels.max()) + 1 for m in members)
            cons = consensus_embedding(spec, [m.obsm.get("X_stmm_corrected", m.embedding) for m in members],
                                       [m.labels for m in members], k, spec.train.seed, section.coords)
        elif spec.domains.consensus_mode == "coassoc":  # spectral clustering of the seeds' co-association
            from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

            k = n_domains if isinstance(n_domains, int) else max(int(m.labels.max()) + 1 for m in members)
            cons = consensus_coassoc([m.labels for m in members], k, spec.train.seed, section.coords,
                                     spec.domains.refine_neighbors)
        else:
            cons = consensus_labels([m.labels for m in members])
    rep = members[cons.representative]
    block = cons.summary(seeds)
    block["mode"] = spec.domains.consensus_mode
    if "start" in cons.info:  # embedding mode: which start of the mixture won (restarts, a member, the vote)
        block["start"] = cons.info["start"]
    block.update(plan)
    block["fit_seconds_per_seed"] = [float(sum(r.seconds for r in m.profile.records)) for m in members]
    block["wall_seconds"] = time.perf_counter() - t0
    info = dict(rep.info)
    info["consensus"] = block
    # the representative member's own stages (its fit), then the consensus run's wall time per stage
    rep_prof = StageProfiler(records=[replace(r, name=f"seed {seeds[cons.representative]}: {r.name}")
                                      for r in rep.profile.records] + prof.records)
    return replace(rep, spec=spec, labels=cons.labels, profile=rep_prof, info=info, confidence=cons.confidence,
                   member_labels=np.stack([m.labels for m in members]))
