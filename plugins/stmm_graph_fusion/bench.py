"""Graph-fusion in the benchmark suites (called through :class:`stmm_graph_fusion.family.GraphFusionPipeline`'s
bench hooks): domains fitted as ``stmm fit`` does (consensus rows included), and per-stage speed with the image
encoder's bare throughput."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def domains(spec: Any, path: str, section: Any, label: str, device: str) -> tuple[Any, np.ndarray, int, dict]:
    """``(section, labels, K, details)`` of one fit (or consensus of fits) on *section*, K from *label*."""
    from stmm_core.data.cache import FeatureCache
    from stmm_core.metrics import clustering_scores
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import resolve_n_domains

    k = resolve_n_domains(section, None, label, flag="--label")
    if spec.domains.consensus > 1:  # its own row: the consensus of seeds seed*N … seed*N+N-1
        from stmm_core.pipeline.consensus_fit import fit_consensus

        res = fit_consensus(spec, section, n_domains=k, device=device, cache=FeatureCache(),
                            load={"data": path}, progress=False)
    else:
        res = fit_graph_fusion(spec, section, n_domains=k, device=device, cache=FeatureCache(), progress=False)
    truth = section.obs[label].to_numpy()
    details = {"stages": res.profile.to_list(),
               "image_cached": bool(res.info.get("image", {}).get("cached")), "spec_hash": spec.hash()}
    if res.member_labels is not None:
        cons = res.info["consensus"]
        cons["member_ari"] = [clustering_scores(truth, m)["ari"] for m in res.member_labels]
        details["consensus"] = cons
    if res.info.get("image_weight"):
        details["image_weight"] = res.info["image_weight"]
    return section, res.labels, k, details


def bare_throughput(encoder: Any, batch: Any, repeats: int = 3) -> dict[str, float]:
    """Tiles/s of ``encode`` (uint8 in) and of the bare model forward on the same prepared batch."""
    import torch

    n = int(batch.shape[0])
    model = getattr(encoder, "model", None)
    prepare = getattr(encoder, "_prepare", None)
    encoder.encode(batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        encoder.encode(batch)
    enc_s = (time.perf_counter() - t0) / repeats
    out = {"batch": float(n), "batch_encode_tiles_per_s": n / enc_s}
    if model is not None and callable(prepare):
        with torch.inference_mode():
            x = prepare(batch)
            model.eval()
            model(x)
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
            out["bare_forward_tiles_per_s"] = n * repeats / (time.perf_counter() - t0)
    return out


def speed(spec: Any, path: str, label: str | None, device: str) -> dict[str, Any]:
    import torch

    from stmm_core.data.tiles import auto_out_px, iter_tiles
    from stmm_graph_fusion.fit import _build, fit_graph_fusion
    from stmm_core.pipeline.image_features import default_tile_size
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.profiling import StageProfiler, current_rss_bytes
    from stmm_core.seeding import seed_everything

    t_all = time.perf_counter()
    prof = StageProfiler()
    with prof.stage("read"):
        section = load_section(path)
    k = resolve_n_domains(section, None, label) if label else 7
    m: dict[str, Any] = {}
    thr: dict[str, float] = {}
    if spec.components.get("image") is not None and section.image is not None:
        seed_everything(int(spec.train.seed))
        enc = _build("image", spec).to(device)
        tile_px = default_tile_size(section, spec.tiles)
        requested = getattr(enc.params, "input_size", "auto")
        out_px = (auto_out_px(section, tile_px, int(enc.preprocessing.input_size)) if requested == "auto"
                  else int(requested))
        bs = int(getattr(enc.params, "batch_size", 64))
        first = None
        with prof.stage("tiling"):
            for chunk in iter_tiles(section, tile_px, out_px, batch_size=bs, pad_value=spec.tiles.pad_value):
                if first is None:
                    first = chunk.copy()
        thr = bare_throughput(enc, torch.from_numpy(first).to(device))
        del enc
    res = fit_graph_fusion(spec, section, n_domains=k, device=device, cache=None, progress=False)
    stages = {r.name: r for r in prof.records + res.profile.records}
    sec = {name: r.seconds for name, r in stages.items()}
    m["read_s"] = sec.get("read")
    m["tiling_s"] = sec.get("tiling")
    if "image features" in sec:
        m["image_encoding_s"] = max(sec["image features"] - (sec.get("tiling") or 0.0), 0.0)
        m["encode_tiles_per_s"] = section.n_spots / sec["image features"]
    m["gene_features_s"] = sec.get("gene features")
    m["graph_s"] = sec.get("graph")
    m["train_s"] = sec.get("train")
    m["clustering_s"] = sec.get("clustering")
    m["peak_rss_mb"] = max([r.peak_rss_mb for r in stages.values()] + [current_rss_bytes() / 2**20])
    if "bare_forward_tiles_per_s" in thr and m.get("encode_tiles_per_s"):
        m["bare_forward_tiles_per_s"] = thr["bare_forward_tiles_per_s"]
        m["pipeline_over_bare"] = thr["bare_forward_tiles_per_s"] / m["encode_tiles_per_s"]
    m["total_s"] = time.perf_counter() - t_all
    details = {"stages": [r.to_dict() for r in stages.values()], "n_spots": section.n_spots, "k": k,
               "throughput": thr, "threads": torch.get_num_threads(),
               "image_encoding_note": "image features stage (tiling + encoding, cache off) minus tiling timed alone"}
    return {"metrics": m, "details": details}
