"""Suite ``speed``: wall time and peak memory per stage, and image-encoding throughput against the bare model.

Each run is a fresh Python process (so its peak RSS is its own) with the image-feature cache off. Stages:
reading, tiling (cutting every tile, timed alone), image encoding (the pipeline's image-feature stage minus
that tiling time), gene features, graph building, fusion/graph training, clustering. Throughput: tiles per
second of the whole image-feature stage, of the encoder's ``encode`` call on one batch (uint8 → normalised
→ model), and of the bare ``model(x)`` forward on the same already-prepared batch; ``pipeline_over_bare`` is
bare throughput / pipeline throughput (1.0 = the pipeline adds nothing around the model).
Each family measures itself (:meth:`stmm_core.pipeline_base.Pipeline.bench_speed`; graph-fusion: the stages
above; magic: reading, tiling and its two training stages; the generic default: the whole fit).
"""

from __future__ import annotations

import json
import subprocess
import sys
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


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry of the measuring subprocess."""
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    from stmm_core.pipeline_base import implementation

    configure_threads()
    spec = parse_spec(payload["spec"])
    return implementation(spec).bench_speed(spec, payload["path"], payload.get("label"), payload["device"])


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
