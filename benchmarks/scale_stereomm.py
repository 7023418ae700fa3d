"""Wall time and peak memory per stage of the StereoMM recipe as the number of spots grows (``speed`` suite).

    .venv/bin/python benchmarks/scale_stereomm.py [--sizes 3460 10000 30000] [--epochs 200] [--scope neighbourhood]

The 3,460-spot point is the real DLPFC 151676 section; the other sizes are SYNTHETIC sections
(stmm_core.testing.synthetic) passed to ``stmm benchmark speed`` by path. Each run is its own process.
Prints the speed table and the fitted exponent b of time ~ N^b and of peak RSS ~ N^b (b ≈ 1: linear).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3460, 10000, 30000])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--scope", default="neighbourhood", choices=["neighbourhood", "global"])
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args()

    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.benchmark.report import table
    from stmm_core.testing.synthetic import make_synthetic_adata

    tmp = Path(tempfile.mkdtemp(prefix="stmm-scale-"))
    datasets, sizes = [], {}
    for n in args.sizes:
        if n == 3460:
            datasets.append("dlpfc-151676")
            sizes["dlpfc-151676"] = n
            continue
        path = tmp / f"synthetic_{n}.h5ad"
        make_synthetic_adata(n_spots=n, n_genes=2000, n_domains=7, seed=0, image_scale=0.1).write_h5ad(path)
        datasets.append(str(path))
        sizes[path.stem] = n
    outcome = run_benchmark("speed", pipelines=["stereomm"], datasets=datasets, label="domain", out_dir=args.output,
                            sets={"*": {"image.weights": "random", "train.epochs": args.epochs,
                                        "fusion.scope": args.scope}},
                            command="python benchmarks/scale_stereomm.py")
    print(table(outcome.result))
    ok = [r for r in outcome.result.rows if r.status == "ok"]
    if len(ok) >= 2:
        ns = [sizes[r.dataset] for r in ok]
        t = fit_exponent(ns, [r.metrics["total_s"] for r in ok])
        m = fit_exponent(ns, [r.metrics["peak_rss_mb"] for r in ok])
        print(f"time ~ N^{t:.2f}, peak RSS ~ N^{m:.2f} ({args.scope} attention, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
