"""Suite ``speed``: wall time and peak memory per stage, and image-encoding throughput against the bare model.

Each run is a fresh Python process (so its peak RSS is its own) with the image-feature cache off. Stages:
reading, tiling (cutting every tile, timed alone), image encoding (the pipeline's image-feature stage minus
that tiling time), gene features, graph building, fusion/graph training, clustering. Throughput: tiles per
second of the whole image-feature stage, of the encoder's ``encode`` call on one batch (uint8 → normalised
→ model), and of the bare ``model(x)`` forward on the same already-prepared batch; ``pipeline_over_bare`` is
bare throughput / pipeline throughput (1.0 = the pipeline adds nothing around the model).
Magic pipelines report reading, tiling and the two training stages from their own timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from stmm_core.benchmark.runner import Context, Metrics, Unit

METRICS = ["total_s", "read_s", "tiling_s", "image_encoding_s", "gene_features_s", "graph_s", "train_s",
           "clustering_s", "peak_rss_mb", "encode_tiles_per_s", "bare_forward_tiles_per_s", "pipeline_over_bare"]
PRIMARY = "total_s"
HIGHER_IS_BETTER = {m: False for m in METRICS} | {"encode_tiles_per_s": True, "bare_forward_tiles_per_s": True}
STAGE_METRICS = ["read_s", "tiling_s", "image_encoding_s", "gene_features_s", "graph_s", "train_s", "clustering_s"]
DEFAULT_DATASETS = ["dlpfc-151676"]
DEFAULT_PIPELINES = ["stereomm", "stereomm-expression", "graphst", "expression-gmm", "image-gmm"]
DEFAULT_SEEDS = 1


def describe(m: Metrics) -> str:
    ratio = m.get("pipeline_over_bare")
    extra = f", encoding x{ratio:.2f} of bare forward" if ratio else ""
    return f"total {m.get('total_s') or 0:.1f} s, peak RSS {m.get('peak_rss_mb') or 0:.0f} MB{extra}"


def _bare_throughput(encoder: Any, batch: Any, repeats: int = 3) -> dict[str, float]:
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


def _graph_fusion_child(spec: Any, path: str, label: str | None, device: str) -> dict[str, Any]:
    import torch

    from stmm_core.data.tiles import auto_out_px, iter_tiles
    from stmm_core.pipeline.graph_fusion import _build, fit_graph_fusion
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
        thr = _bare_throughput(enc, torch.from_numpy(first).to(device))
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


def _magic_child(spec: Any, path: str, device: str) -> dict[str, Any]:
    import tempfile

    import torch

    from stmm_core.profiling import current_rss_bytes
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import build_component, fit_magic, image_input_px, read_sections

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        meta = fit_magic(spec, [path], tmp, device=device, use_cache=False)
    t = meta["timings"]
    section = read_sections([path])[0]
    size = tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
    tiles = torch.from_numpy(section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value, None)[:64])
    enc = build_component(spec, "image").to(device)
    with torch.no_grad():
        enc.eval()
        enc(tiles)  # warm-up
        t0 = time.perf_counter()
        enc(tiles)
    pipe_s = time.perf_counter() - t0
    thr = {}
    model = getattr(enc, "model", None) or getattr(enc, "vit", None)
    prepare = getattr(enc, "prepare", None)
    if model is not None and callable(prepare):
        with torch.inference_mode():
            x = prepare(tiles)
            model.forward_features(x)
            t0 = time.perf_counter()
            model.forward_features(x)
            thr["bare_forward_tiles_per_s"] = len(tiles) / (time.perf_counter() - t0)
    m = {"read_s": t.get("read_seconds"), "tiling_s": t.get("tiles_seconds"),
         "train_s": (t.get("stage1_seconds") or 0.0) + (t.get("stage2_seconds") or 0.0),
         "peak_rss_mb": current_rss_bytes() / 2**20, "total_s": time.perf_counter() - t_all,
         "encode_tiles_per_s": len(tiles) / pipe_s}
    if "bare_forward_tiles_per_s" in thr:
        m["bare_forward_tiles_per_s"] = thr["bare_forward_tiles_per_s"]
        m["pipeline_over_bare"] = thr["bare_forward_tiles_per_s"] / m["encode_tiles_per_s"]
    return {"metrics": m, "details": {"timings": t, "n_spots": section.n_spots,
                                      "note": "peak_rss_mb is the RSS at the end (magic has no per-stage sampler)"}}


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry of the measuring subprocess."""
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    configure_threads()
    spec = parse_spec(payload["spec"])
    if spec.pipeline == "magic":
        return _magic_child(spec, payload["path"], payload["device"])
    return _graph_fusion_child(spec, payload["path"], payload.get("label"), payload["device"])


def _run_child(payload: dict[str, Any]) -> tuple[Metrics, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "stmm_core.benchmark.suites.speed", json.dumps(payload)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR ")]
        msg = err[-1][6:] if err else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring process failed (exit {proc.returncode}): {msg}")
    res = json.loads(lines[-1][7:])
    return res["metrics"], res["details"]


def units(ctx: Context) -> list[Unit]:
    from stmm_core.benchmark.runner import NotApplicable

    out = []
    for ds in ctx.datasets:
        for pipe in ctx.pipelines:
            for seed in ctx.seeds:
                def fn(pipe=pipe, ds=ds, seed=seed):
                    if pipe.domains_method is not None:
                        raise NotApplicable(f"{pipe.method} runs a peer package: timed in the domains suite "
                                            "(details: fit_seconds)")
                    if pipe.method is not None:
                        raise NotApplicable(f"{pipe.method} is timed inside the expression suite (fold details)")
                    spec = pipe.spec.with_overrides({"train.seed": seed})
                    return _run_child({"spec": spec.to_dict(), "path": ds.local_path, "label": ds.descriptor.label,
                                       "device": ctx.device})
                out.append(Unit(pipe, ds.name, None, seed, fn))
    return out


def notes(ctx: Context) -> list[str]:
    return ["Each run in a fresh process, feature cache off. Times in seconds on the machine in 'environment' "
            "(shared CPU: other processes ran at the same time, so treat differences under ~20 % as noise)."]


if __name__ == "__main__":  # the measuring subprocess
    try:
        result = child_main(json.loads(sys.argv[1]))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        from stmm_core.benchmark.runner import error_text

        print("ERROR " + error_text(exc), flush=True)
        sys.exit(1)
    print("RESULT " + json.dumps(result, default=float), flush=True)
