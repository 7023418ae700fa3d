"""Magic against the HEST ridge baseline on HER2ST C2-C6, leave one section out: a thin wrapper.

    .venv/bin/python benchmarks/magic_her2st.py [--seed-start 1] [--folds C2 C3 C4 C5 C6] [-o DIR] [--work DIR]

Runs ``stmm benchmark expression`` and then ``stmm benchmark retrieval`` (same folds, same trained models
through ``--work``) with the configs in ``benchmarks/configs/``. The per-fold protocol (targets and HVGs
chosen on the training sections, ridge on the frozen encoder at Magic's initialisation, retrieval among all
spots of the held-out section) lives in ``stmm_core/benchmark/suites/folds.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    ap.add_argument("--seed-start", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/stmm-magic-her2st"))
    args = ap.parse_args()

    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.benchmark.report import table

    for suite in ("expression", "retrieval"):
        outcome = run_benchmark(str(CONFIGS / f"{suite}-her2st.json"), datasets=[f"her2st-{f}" for f in args.folds],
                                seeds=args.seeds, seed_start=args.seed_start, out_dir=args.output,
                                work_dir=args.work, command=f"python benchmarks/magic_her2st.py ({suite})")
        print(table(outcome.result))


if __name__ == "__main__":
    main()
