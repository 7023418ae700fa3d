"""Fit a graph-fusion spec on a data path and write the run folder: the code behind ``stmm fit``/``run``/``demo``
for this family (called through :class:`stmm_graph_fusion.family.GraphFusionPipeline`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmm_core.errors import DataError, StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec


def fit_to_dir(
    spec: "PipelineSpec",
    data: str | Path | list,
    out_dir: str | Path,
    *,
    n_domains: int | str | None = None,
    labels: str | None = None,
    device: str = "auto",
    image: str | Path | None = None,
    scale: float | None = None,
    use_cache: bool = True,
    progress: bool = True,
    coords: str | Path | None = None,
    counts_layer: str | None = None,
    markers: int = 50,
    batch_correct: str | None = None,
    bin_size: float | None = None,
    region: str | None = None,
    zarr: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit *spec* on *data*, write ``out_dir`` and return the metrics dict (also in metrics.json).

    Several paths in *data*: one joint fit over all sections (:mod:`stmm_core.pipeline.multi_section`;
    ``batch_correct="harmony"`` corrects the embedding for the section before clustering).

    ``coords`` / ``counts_layer``: see :func:`stmm_core.data.readers.read_section` (a counts table's positions;
    the layer holding raw counts); ``bin_size`` / ``region``: Visium HD bin size (µm) and region, Stereo-seq GEM
    bin size (DNB); ``zarr``: also write result.zarr (SpatialData). ``markers``: top marker genes per domain
    written to markers.csv (0 = none)."""
    from stmm_core import __version__
    from stmm_core.data.cache import FeatureCache
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_graph_fusion.fit import fit_graph_fusion, n_params
    from stmm_core.pipeline.outputs import check_output_dir, write_run
    from stmm_core.profiling import current_rss_bytes
    from stmm_core.seeding import configure_threads, resolve_device

    t0 = time.perf_counter()
    out_dir = check_output_dir(out_dir, overwrite=overwrite,
                               inputs=[data] if isinstance(data, (str, Path)) else list(data))
    if zarr:  # fail before the fit when the optional extra is missing
        from stmm_core.data.spatialdata_io import _require

        _require()
    cache = FeatureCache().ensure() if use_cache else None
    from stmm_core.distributed import context as dist_ctx

    dev = resolve_device(device)
    threads = configure_threads()
    distributed = dist_ctx.init(dev)  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    t_read = time.perf_counter()
    from stmm_core.data.sanity import counts_warning, recorded_warnings

    with recorded_warnings() as data_warnings:
        if len(paths) > 1:  # several sections, one joint fit
            from stmm_core.pipeline.multi_section import prepare_sections

            if distributed:
                raise StmmError("several --data sections are fitted in one process; do not combine them with --nproc")
            section, load, fit_kw = prepare_sections(spec, paths, image=image, scale=scale, coords=coords,
                                                     counts_layer=counts_layer, batch_correct=batch_correct,
                                                     device=dev, cache=cache, progress=progress)
            data = [str(p) for p in paths]
        else:
            if batch_correct not in (None, "none"):
                raise StmmError("--batch-correct corrects between sections: give several sections with --data A B …")
            data = paths[0]
            if image is not None and spec.components.get("image") is None:
                import warnings

                warnings.warn(f"--image {image}: this pipeline ({spec.recipe or 'spec'}) has no image encoder, so "
                              "the image only backs the plots; compose one with an image encoder (e.g. the recipe "
                              "stereomm) to fuse it", stacklevel=2)
            load = {"data": data, "image": image, "scale": scale, "coords": coords, "counts_layer": counts_layer,
                    "bin_size": bin_size, "region": region}
            fit_kw = {}
            try:
                section = load_section(data, image=image, scale=scale, coords=coords, counts_layer=counts_layer,
                                       bin_size=bin_size, region=region)
            except DataError as exc:
                if image is not None or scale is not None or spec.components.get("image") is not None:
                    raise
                # an expression-only pipeline does not need the stored image: its problems do not stop the run
                section = load_section(data, image=False, coords=coords, counts_layer=counts_layer,
                                       bin_size=bin_size, region=region)
                load = {"data": data, "image": False, "coords": coords, "counts_layer": counts_layer,
                        "bin_size": bin_size, "region": region}
                import warnings

                warnings.warn(f"the stored image is not used (this pipeline has no image encoder): {exc}",
                              stacklevel=2)
    read_s = time.perf_counter() - t_read
    from stmm_core.pipeline.outputs import check_room_before_fit

    check_room_before_fit(out_dir, section)  # a full disk is said now, not after the fit
    from stmm_core.faults import point

    point("read")
    not_counts = counts_warning(section)
    if not_counts and not any("non-integer" in w for w in data_warnings):
        import warnings

        warnings.warn(not_counts, stacklevel=2)
        data_warnings.append(not_counts)
    data_warnings = list(data_warnings)
    k = resolve_n_domains(section, n_domains, labels)
    if isinstance(k, int) and not 1 <= k <= section.n_spots:
        raise StmmError(f"--n-domains {k} is not possible with {section.n_spots} spots; use 1…{section.n_spots}")
    from stmm_core.pipeline.image_caveats import image_caveat

    caveat = image_caveat(spec, section)  # resolution guard: said before the long part starts
    if caveat and caveat["warning"] and dist_ctx.rank() == 0:
        import warnings

        warnings.warn(caveat["warning"], UserWarning, stacklevel=1)
    if spec.pipeline != "graph-fusion":  # pragma: no cover - only one runner so far
        raise StmmError(f"pipeline type {spec.pipeline!r} cannot be fitted with 'stmm fit'")
    with recorded_warnings() as fit_warnings:
        if spec.domains.consensus > 1:
            if distributed:
                raise StmmError("--consensus runs its seeds in its own processes; do not combine it with --nproc")
            from stmm_core.pipeline.consensus_fit import fit_consensus

            result = fit_consensus(spec, section, n_domains=k, device=dev, cache=cache, load=load,
                                   progress=progress, fit_kwargs=fit_kw)
        else:
            result = fit_graph_fusion(spec, section, n_domains=k, device=dev, cache=cache,
                                      progress=progress and dist_ctx.rank() == 0, **fit_kw)
    data_warnings += [w for w in fit_warnings if w not in data_warnings]
    if distributed and dist_ctx.rank() != 0:
        dist_ctx.finish()
        return {"rank": dist_ctx.rank()}
    if markers > 0 and result.labels is not None:
        from stmm_core.pipeline.markers import find_markers

        with result.profile.stage("markers"):
            try:
                result.markers = find_markers(section, result.labels, n_top=markers)
            except ValueError as exc:  # an extra output: the fit and its domains are still written
                import warnings

                warnings.warn(f"marker genes not computed: {exc}", stacklevel=2)
    if k == "auto":
        k = (result.info.get("auto_k") or {}).get("chosen")
    metrics: dict[str, Any] = {
        "stmm_version": __version__,
        "spec_hash": result.spec.hash(),
        "data": data if isinstance(data, list) else str(data),
        "section": section.name,
        "n_domains": k,
        "seed": spec.train.seed,
        "device": dev,
        "threads": threads,
        "n_parameters": n_params(result.state_dict),
        "final_loss": result.history[-1] if result.history else None,
        "stages": [{"name": "read", "seconds": read_s}] + result.profile.to_list(),
        "info": result.info,
    }
    if "consensus" in result.info:
        metrics["consensus"] = result.info.pop("consensus")
    if "sections" in section.meta:
        metrics["sections"] = {"sections": section.meta["sections"], "shared_genes": section.meta["shared_genes"],
                               "cross_section_edges": section.meta["cross_section_edges"],
                               "batch_correct": batch_correct or "none"}
    if caveat is not None:
        metrics["image_caveat"] = caveat
    if section.meta.get("filtered"):
        metrics["filtered"] = dict(section.meta["filtered"])
    if data_warnings:
        metrics["warnings"] = list(data_warnings)
    if result.labels is not None:
        import numpy as np

        found = int(len(np.unique(np.asarray(result.labels))))
        metrics["n_domains_found"] = found
        if k is not None and found != k:
            metrics.setdefault("warnings", []).append(
                f"{found} domains found, not the {k} asked for (--n-domains); some clusters received no spots")
    if labels is not None and result.labels is not None:
        metrics["clustering"] = clustering_scores(section.obs[labels].to_numpy(), result.labels)
        metrics["clustering"]["label_column"] = labels
        if "sections" in section.meta:
            from stmm_core.pipeline.multi_section import section_scores

            metrics["sections"]["clustering"] = section_scores(section, result.labels, labels)
        if result.member_labels is not None:  # each seed of the consensus on its own
            truth = section.obs[labels].to_numpy()
            metrics["consensus"]["member_ari"] = [clustering_scores(truth, m)["ari"] for m in result.member_labels]
        from stmm_core.pipeline.run import domain_label_map

        metrics["clustering"]["domain_to_label"] = domain_label_map(result.labels, section.obs[labels].to_numpy())
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["peak_rss_mb"] = max([r.peak_rss_mb for r in result.profile.records] + [current_rss_bytes() / 2**20])
    if distributed:
        metrics["processes"] = dist_ctx.world_size()
    # the run folder is a pipeline that may be pushed: no local paths in metrics.json
    from stmm_core.hub.scrub import scrub_paths

    metrics = scrub_paths(metrics)
    metrics["files"] = [p.name for p in write_run(out_dir, section, result, metrics, label_column=labels,
                                                  zarr=zarr)]
    if distributed:
        dist_ctx.finish()
    return metrics


def summary_lines(metrics: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Human summary printed to stdout by the CLI."""
    lines = [f"section {metrics['section']}: {metrics['info']['n_spots']} spots, "
             f"{metrics['info']['n_genes']} genes, device {metrics['device']}"]
    removed = (metrics.get("filtered") or {}).get("spots_removed", 0)
    if removed:
        lines.append(f"  {removed} spot{'s' if removed != 1 else ''} without counts left out (not in result.h5ad)")
    img = metrics["info"].get("image")
    if img:
        cav = metrics.get("image_caveat") or {}
        where = (f"; {cav['image']}, {cav['spot_image_px']:g} px per spot"
                 if cav.get("image") and cav.get("spot_image_px") is not None else "")
        lines.append(f"image features: {img['encoder']} at {img['input_px']} px "
                     f"({'from cache' if img['cached'] else 'computed'}{where})")
    caveat = (metrics.get("image_caveat") or {}).get("line")
    if caveat:
        lines.append(f"  note: {caveat}")
    iw = metrics["info"].get("image_weight")
    if iw:
        lines.append(f"image weight (auto): {iw['weight']:.3f}"
                     + (" - the image is left out of the fusion" if iw["image_left_out"] else "")
                     + f"; image coherence {iw['coherence_ratio']:.2f} of the expression's (Moran's I), predicts "
                     f"{iw['prediction_ratio']:.2f} of its spatial signal (blocked-CV R² "
                     f"{iw['cv_r2_image_to_gene']:.3f}); --set fusion.img_weight=W to override")
    for st in metrics["stages"]:
        extra = f", peak RSS {st['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in st else ""
        lines.append(f"  {st['name']:<15} {st['seconds']:7.1f} s{extra}")
    auto = (metrics.get("info") or {}).get("auto_k")
    if auto:
        from stmm_core.pipeline.auto_k import candidates_line

        lines.append(f"K chosen without labels: {auto['chosen']} ({auto['criterion']})")
        lines.append(f"  candidates: {candidates_line(auto)}")
    if "clustering" in metrics:
        c = metrics["clustering"]
        lines.append(f"domains: K={metrics['n_domains']}  ARI {c['ari']:.3f}  NMI {c['nmi']:.3f} "
                     f"against obs[{c['label_column']!r}] ({c['n_labelled']} labelled spots)")
    elif metrics.get("n_domains"):
        lines.append(f"domains: K={metrics['n_domains']}")
    else:
        lines.append("domains: not computed (give --n-domains K, or --labels COLUMN to take K from the labels); "
                     "the embedding is in result.h5ad obsm['X_stmm']")
    multi = (metrics.get("sections") or {}).get("clustering")
    if multi:  # several sections in one fit
        for name, sc in multi["sections"].items():
            lines.append(f"  section {name}: ARI {sc['ari']:.3f}  NMI {sc['nmi']:.3f} ({sc['n_labelled']} labelled "
                         "spots)")
        lines.append(f"  {multi['domains_same_label_everywhere']} have the same majority label in each section")
    if "consensus" in metrics:
        c = metrics["consensus"]
        single = ""
        if "member_ari" in c:
            single = f"; single seeds ARI {min(c['member_ari']):.3f}–{max(c['member_ari']):.3f}"
        lines.append(f"consensus of {c['n']} seeds ({', '.join(map(str, c['seeds']))}; {c['processes']} "
                     f"process{'es' if c['processes'] != 1 else ''}): seed-to-seed ARI mean {c['seed_ari_mean']:.3f}, "
                     f"min {c['seed_ari_min']:.3f}; mean confidence {c['mean_confidence']:.2f}{single}")
    found = metrics.get("n_domains_found")
    if found is not None and metrics.get("n_domains") and found != metrics["n_domains"]:
        lines.append(f"  note: {found} domains found, not K={metrics['n_domains']} (some clusters received no "
                     "spots or were smoothed away); try a smaller --n-domains")
    for w in metrics.get("warnings", []):
        lines.append(f"  warning: {w}")
    lines.append(f"wall time {metrics['wall_seconds']:.1f} s, peak RSS {metrics['peak_rss_mb']:.0f} MB")
    lines.append(f"wrote {out_dir}/: {', '.join(metrics['files'])}")
    return lines
