"""Magic against its baselines and its stage-1 ablations on HER2ST, leave one section out: a thin wrapper.

    .venv/bin/python benchmarks/magic_her2st.py [--seed-start 1] [--folds C2 C3 C4 C5 C6] [--ablation]
        [--cross-patient] [-o DIR] [--work DIR]
    .venv/bin/python benchmarks/magic_her2st.py --report RESULT.json [RESULT.json ...]   # ablation lines only

Runs ``stmm benchmark expression`` and then ``stmm benchmark retrieval`` (same folds, same trained models
through ``--work``) with the configs in ``benchmarks/configs/``. ``--ablation`` adds the rows
``magic-no-stage1`` (the decoder on the frozen encoder before stage 1), ``stage1-ridge`` (ridge-cv on the
stage-1 encoder) and ``init-ridge`` (ridge-cv on the same encoder before stage 1) and prints their paired
differences; ``context-ridge`` (ridge-cv on the encoder's frozen feature bank) is a baseline of the config.
``--cross-patient`` trains on C2-C6 and evaluates HER2ST A1 (patient A) instead of the C folds.
The per-fold protocol (targets and HVGs chosen on the training sections, ridge on the frozen encoder at Magic's
initialisation, retrieval among all spots of the held-out section) lives in
``stmm_core/benchmark/suites/folds.py``; the ablations in ``plugins/stmm_magic/ablation.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
ABLATION = ["stage1-ridge", "init-ridge", "magic-no-stage1"]  # after magic: stage1-ridge reuses magic's stage 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    ap.add_argument("--seed-start", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--ablation", action="store_true", help="add magic-no-stage1, stage1-ridge and init-ridge")
    ap.add_argument("--cross-patient", action="store_true", help="train on C2-C6, evaluate A1")
    ap.add_argument("--report", nargs="+", type=Path, default=None, help="print ablation lines of results")
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/stmm-magic-her2st"))
    args = ap.parse_args()

    from stmm_magic.ablation import ablation_lines

    if args.report:
        from stmm_core.benchmark.results import load_result

        rows = [r for p in args.report for r in load_result(p).rows]
        print("\n".join(ablation_lines(rows)))
        return

    import json

    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.benchmark.report import table

    datasets = [f"her2st-{f}" for f in args.folds]
    folds = None
    if args.cross_patient:
        datasets, folds = [f"her2st-C{i}" for i in range(2, 7)] + ["her2st-A1"], ["her2st-A1"]
    for suite in ("expression", "retrieval"):
        config = json.loads((CONFIGS / f"{suite}-her2st.json").read_text())
        pipes = config["pipelines"] + (ABLATION if args.ablation else [])
        outcome = run_benchmark(suite, pipelines=pipes, datasets=datasets, folds=folds, seeds=args.seeds,
                                seed_start=args.seed_start, out_dir=args.output, work_dir=args.work,
                                command=f"python benchmarks/magic_her2st.py ({suite})")
        print(table(outcome.result))
        if args.ablation and suite == "expression":
            print("\n".join(ablation_lines(outcome.result.rows)))


if __name__ == "__main__":
    main()
