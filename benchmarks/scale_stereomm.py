"""Wall time and peak memory per stage of the StereoMM recipe as the number of spots grows.

    .venv/bin/python benchmarks/scale_stereomm.py [--sizes 3460 10000 30000] [--epochs 200] [--scope neighbourhood global]

Every size runs in its own subprocess (so peak RSS is that run's). The 1x point is the real DLPFC 151676
section; the others are SYNTHETIC sections (stmm_core.testing.synthetic: smooth domains, negative-binomial
counts, a synthetic H&E-like image). Prints a table and the fitted exponent b of time ~ N^b and of
(peak RSS - baseline) ~ N^b: b ≈ 1 means linear, an N×N buffer would show b ≈ 2.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, environment, save  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from stmm_core.cli.compose_cmd import compose_spec
from stmm_core.pipeline.run import fit_to_dir
from stmm_core.profiling import current_rss_bytes
args = json.loads(sys.argv[1])
baseline = current_rss_bytes() / 2**20
path = args["path"]
if path is None:
    from stmm_core.testing.synthetic import make_synthetic_adata
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "synthetic.h5ad"
    make_synthetic_adata(n_spots=args["n"], n_genes=2000, n_domains=7, seed=0, image_scale=0.1).write_h5ad(path)
spec = compose_spec("stereomm", None, {"image.weights": "random", "train.epochs": args["epochs"],
                                        "fusion.scope": args["scope"]})
with tempfile.TemporaryDirectory() as out:
    m = fit_to_dir(spec, path, Path(out) / "run", n_domains=7, labels=args["labels"], device="cpu",
                   progress=False, use_cache=False)
print("RESULT " + json.dumps({"baseline_mb": baseline, "stages": m["stages"], "peak_rss_mb": m["peak_rss_mb"],
                              "wall_s": m["wall_seconds"], "n": m["info"]["n_spots"],
                              "ari": m.get("clustering", {}).get("ari")}))
"""


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3460, 10000, 30000])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--scope", nargs="+", default=["neighbourhood", "global"])
    args = ap.parse_args()
    real = data_dir() / "dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad"
    rows = []
    for scope in args.scope:
        for n in args.sizes:
            is_real = n == 3460 and real.exists()
            payload = {"n": n, "epochs": args.epochs, "scope": scope, "path": str(real) if is_real else None,
                       "labels": "layer" if is_real else "domain"}
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], capture_output=True, text=True)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{scope} n={n}: FAILED\n{r.stderr[-2000:]}", flush=True)
                rows.append({"scope": scope, "n": n, "error": r.stderr[-500:]})
                continue
            res = json.loads(line[0][7:])
            res.update({"scope": scope, "data": "DLPFC 151676 (real)" if is_real else "synthetic"})
            rows.append(res)
            stages = "  ".join(f"{s['name']} {s['seconds']:.1f}s/{s.get('peak_rss_mb', 0):.0f}MB"
                               for s in res["stages"])
            print(f"{scope:>13} n={res['n']:>7} ({res['data']}): wall {res['wall_s']:.1f} s, peak RSS "
                  f"{res['peak_rss_mb']:.0f} MB, ARI {res['ari'] if res['ari'] is None else round(res['ari'], 3)}"
                  f" | {stages}", flush=True)
    summary = {"rows": rows, "epochs": args.epochs, "environment": environment()}
    for scope in args.scope:
        ok = [r for r in rows if r["scope"] == scope and "error" not in r]
        if len(ok) >= 2:
            ns = [r["n"] for r in ok]
            t_exp = fit_exponent(ns, [r["wall_s"] for r in ok])
            m_exp = fit_exponent(ns, [r["peak_rss_mb"] - r["baseline_mb"] for r in ok])
            train = [next(s for s in r["stages"] if s["name"] == "train") for r in ok]
            tr_exp = fit_exponent(ns, [t["peak_rss_mb"] - r["baseline_mb"] for t, r in zip(train, ok)])
            summary[f"{scope}_exponents"] = {"time": t_exp, "peak_rss_above_baseline": m_exp,
                                             "train_peak_rss_above_baseline": tr_exp}
            print(f"{scope}: time ~ N^{t_exp:.2f}, peak memory above baseline ~ N^{m_exp:.2f} "
                  f"(train stage ~ N^{tr_exp:.2f})")
    print(f"wrote {save('scale_stereomm_' + '_'.join(args.scope), summary)}")


if __name__ == "__main__":
    main()
