"""Scale: wall time and peak memory per stage on SYNTHETIC Stereo-seq-like sections, 10k → 1M bins.

    STMM_THREADS=2 .venv/bin/python benchmarks/scale.py --mode features --sizes 10000 100000 1000000
    STMM_THREADS=2 .venv/bin/python benchmarks/scale.py --mode e2e --sizes 10000 100000
    .venv/bin/python benchmarks/scale.py --summary        # exponents from the stored rows only

Sections come from :mod:`stmm_core.testing.stereo_synthetic`: bin50 lattice inside an irregular tissue outline,
7 smooth domains, negative-binomial counts over 500 genes (~92 % zeros), written to ``.h5ad`` and read back.

* ``features``: precomputed 64-d image features (``obsm["X_image_features"]``, synthetic) → HVG (300) + PCA 30
  → neighbourhood cross-attention fusion → radius graph (8 neighbours) → VGAE (GCN, hidden 256, latent 32,
  ``--epochs``, default 50) → GMM (fit on ≤ 200k bins, all assigned) → 7-NN label refinement. ``train.batch
  = auto``: partitions with an exact halo above 500k bins.
* ``e2e``: the same, but the image features are computed: a tiled RGB TIFF of the section (written tile by
  tile) is read lazily through a DataLoader with workers; tiles of one bin (50 px full-res, 16 px in the
  image) are resized to 32 px and encoded by a **randomly initialised** timm ResNet-18 (no pretrained weights
  offline; speed, not feature quality, is measured).

Each (mode, size) runs in its own subprocess, so its peak RSS is its own; rows are merged into
``benchmarks/results/scale.json`` and the exponents ``b`` of ``time ~ N^b`` and ``peak RSS ~ N^b`` (above the
interpreter baseline) are refitted over whatever sizes are stored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment  # noqa: E402

CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path
import numpy as np
from stmm_core.profiling import current_rss_bytes, StageProfiler
args = json.loads(sys.argv[1])
baseline = current_rss_bytes() / 2**20
from stmm_core.seeding import configure_threads
threads = configure_threads()
from stmm_core.testing.stereo_synthetic import make_stereo_like, write_synthetic_tiff
from stmm_core.cli.compose_cmd import compose_spec
from stmm_core.data.readers import read_section
from stmm_graph_fusion.fit import fit_graph_fusion
from stmm_core.metrics import clustering_scores
tmp = Path(args["tmp"]); tmp.mkdir(parents=True, exist_ok=True)
n, mode = args["n"], args["mode"]
t = time.perf_counter()
adata = make_stereo_like(n, n_genes=500, n_domains=7, seed=0, image_feature_dim=64 if mode == "features" else None)
h5 = tmp / f"stereo_{n}.h5ad"
adata.write_h5ad(h5)
extent = adata.uns["synthetic"]["extent_px"]; zero = adata.uns["synthetic"]["zero_fraction"]
feats = np.asarray(adata.obsm["X_image_features"]) if mode == "features" else None
del adata
synth_s = time.perf_counter() - t
img_info = None
if mode == "e2e":
    t = time.perf_counter()
    img_info = write_synthetic_tiff(tmp / f"stereo_{n}.tif", extent, 7, image_scale=0.32)
    img_info["write_seconds"] = time.perf_counter() - t
prof = StageProfiler()
t0 = time.perf_counter()
with prof.stage("read"):
    kw = {"image": img_info["path"], "scale": img_info["image_scale"]} if mode == "e2e" else {}
    section = read_section(h5, **kw)
sets = {"gene.n_top_genes": 300, "train.epochs": args["epochs"], "graph.hidden": [256], "domains.refine_neighbors": 7}
from stmm_core.spec import parse_spec
raw = compose_spec("stereomm", None, sets).to_dict()
raw["components"]["image"] = {"name": "timm", "params": {"model": "resnet18", "weights": "random", "input_size": 32,
                                                         "batch_size": 256}}
spec = parse_spec(raw)  # features mode: the encoder is not run, the precomputed features replace it
result = fit_graph_fusion(spec, section, n_domains=7, progress=False, image_features=feats)
wall = time.perf_counter() - t0
stages = prof.to_list() + result.profile.to_list()
ari = clustering_scores(section.obs["domain"].to_numpy(), result.labels)["ari"]
print("RESULT " + json.dumps({"n": section.n_spots, "mode": mode, "baseline_mb": baseline, "stages": stages,
      "peak_rss_mb": max(s["peak_rss_mb"] for s in stages), "wall_s": wall, "synthesise_s": synth_s,
      "image": img_info, "zero_fraction": zero, "threads": threads, "ari_vs_synthetic_truth": ari,
      "batch": result.info.get("batch"), "graph": result.info.get("graph"), "image_info": result.info.get("image"),
      "epochs": args["epochs"], "task": result.info.get("task")}))
"""


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def _load() -> dict:
    path = RESULTS / "scale.json"
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def summarise(data: dict) -> dict:
    """Exponents per mode (over sizes with a result) and a one-line table per row."""
    out = {}
    for mode in ("features", "e2e"):
        ok = sorted((r for r in data["rows"] if r.get("mode") == mode and "error" not in r), key=lambda r: r["n"])
        for r in ok:
            st = "  ".join(f"{s['name']} {s['seconds']:.1f}s/{s['peak_rss_mb']:.0f}MB" for s in r["stages"])
            print(f"{mode:>8} n={r['n']:>8}: wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"ARI {r['ari_vs_synthetic_truth']:.3f}, batch {(r.get('batch') or {}).get('mode', 'full')} | {st}")
        if len(ok) >= 2:
            ns = [r["n"] for r in ok]
            exps = {"sizes": ns, "time": fit_exponent(ns, [r["wall_s"] for r in ok]),
                    "peak_rss_above_baseline": fit_exponent(ns, [r["peak_rss_mb"] - r["baseline_mb"] for r in ok])}
            for name in ("gene features", "image features", "graph", "train", "clustering"):
                rows = [next((s for s in r["stages"] if s["name"] == name), None) for r in ok]
                if all(rows):
                    exps[f"{name} time"] = fit_exponent(ns, [s["seconds"] for s in rows])
            out[mode] = exps
            print(f"{mode}: time ~ N^{exps['time']:.2f}, peak RSS above baseline ~ N^{exps['peak_rss_above_baseline']:.2f}"
                  f" over N = {ns}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["features", "e2e"], default="features")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp") + "/stmm-scale")
    ap.add_argument("--summary", action="store_true", help="only print the stored rows and exponents")
    args = ap.parse_args()
    data = _load()
    if not args.summary:
        for n in args.sizes:
            payload = {"n": n, "mode": args.mode, "epochs": args.epochs, "tmp": args.tmp}
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], capture_output=True, text=True)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{args.mode} n={n}: FAILED after {time.perf_counter() - t:.0f} s\n{r.stderr[-3000:]}", flush=True)
                row = {"mode": args.mode, "n": n, "error": r.stderr[-1000:]}
            else:
                row = json.loads(line[0][7:])
                row["requested_n"] = n
            data = _load()  # another invocation may have written meanwhile
            data["rows"] = [x for x in data["rows"] if not (x.get("mode") == args.mode and
                                                           x.get("requested_n", x["n"]) == n)] + [row]
            data["environment"] = environment()
            data["note"] = ("SYNTHETIC Stereo-seq-like sections (stmm_core.testing.stereo_synthetic); "
                            "e2e image encoder is a randomly initialised resnet18")
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "scale.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            print(f"{args.mode} n={n}: done in {time.perf_counter() - t:.0f} s", flush=True)
    data = _load()
    data["exponents"] = summarise(data)
    (RESULTS / "scale.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
