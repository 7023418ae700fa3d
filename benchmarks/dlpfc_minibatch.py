"""DLPFC 151676: mini-batch (spatial partitions, exact halo) against full-batch training, same seeds.

    STMM_THREADS=1 .venv/bin/python benchmarks/dlpfc_minibatch.py [--seeds 0 1 2] [--partition-size 1000]

Recipe stereomm-expression (600 epochs, GMM, 7-NN refinement); ARI against obs["layer"]. Partition mode with
``train.accumulate = true`` follows the full-batch gradient: the halo makes core rows exact and the VAE noise is
drawn once per spot and epoch and shared by all partitions (``GraphContext.noise``), so the two modes differ only
by floating-point summation order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, environment, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--partition-size", type=int, default=1000)
    args = ap.parse_args()
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.metrics import clustering_scores
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.seeding import configure_threads

    configure_threads()
    sec = load_section(data_dir() / "dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad")
    k = resolve_n_domains(sec, None, "layer")
    rows = []
    for seed in args.seeds:
        for batch, extra in (("full", {}), ("partition", {"train.partition_size": args.partition_size})):
            spec = compose_spec("stereomm-expression", None, {"train.batch": batch, "train.seed": seed, **extra})
            t = time.perf_counter()
            r = fit_graph_fusion(spec, sec, n_domains=k, progress=False)
            ari = clustering_scores(sec.obs["layer"].to_numpy(), r.labels)["ari"]
            rows.append({"seed": seed, "batch": batch, "ari": ari, "seconds": time.perf_counter() - t,
                         "batch_info": r.info.get("batch")})
            print(json.dumps(rows[-1]), flush=True)
    summary = {"rows": rows, "environment": environment(), "recipe": "stereomm-expression", "section": "151676"}
    for b in ("full", "partition"):
        aris = [r["ari"] for r in rows if r["batch"] == b]
        summary[f"{b}_mean_ari"] = statistics.mean(aris)
    summary["per_seed_difference"] = [p["ari"] - f["ari"] for f, p in zip(rows[::2], rows[1::2])]
    print(f"full {summary['full_mean_ari']:.3f}, partition {summary['partition_mean_ari']:.3f} (mean over seeds "
          f"{args.seeds}); per-seed partition - full: {[round(d, 3) for d in summary['per_seed_difference']]}")
    print(f"wrote {save('dlpfc_minibatch_151676', summary)}")


if __name__ == "__main__":
    main()
