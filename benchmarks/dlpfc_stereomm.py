"""ARI of a graph-fusion recipe on a DLPFC section over several seeds: a thin wrapper over ``stmm benchmark``.

    .venv/bin/python benchmarks/dlpfc_stereomm.py [--section 151676] [--seeds 3] [--recipe stereomm] [-o DIR]

Same as ``stmm benchmark domains --pipelines RECIPE --datasets dlpfc-SECTION --seeds N
--set image.weights=random``; prints the table and, with ``-o``, writes results/domains.json, plots and
RESULTS.md there. The full comparison against the baselines is ``benchmarks/configs/domains-dlpfc.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", default="151676", choices=["151676", "151510"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--recipe", default="stereomm")
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args()

    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.benchmark.report import table

    outcome = run_benchmark("domains", pipelines=[args.recipe], datasets=[f"dlpfc-{args.section}"], seeds=args.seeds,
                            sets={"*": {"image.weights": "random"}}, out_dir=args.output,
                            command="python benchmarks/dlpfc_stereomm.py " + " ".join(
                                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None))
    print(table(outcome.result))


if __name__ == "__main__":
    main()
