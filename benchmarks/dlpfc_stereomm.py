"""ARI of the StereoMM recipe on DLPFC against the expert layers, over several seeds, default settings.

    .venv/bin/python benchmarks/dlpfc_stereomm.py [--section 151676] [--seeds 0 1 2] [--recipe stereomm]

Prints per-seed ARI/NMI, mean ± sd, wall time and peak memory; writes benchmarks/results/dlpfc_<recipe>_<section>.json.
Defaults were chosen on section 151510 (never on 151676), with no per-section tuning.
The image encoder is randomly initialised (pretrained weights are not reachable offline) — the figure says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, environment, save  # noqa: E402

SECTIONS = {
    "151676": ("dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad", "layer"),
    "151510": ("dlpfc/151510_drsc_500genes/dlpfc_151510_500genes_lowres.h5ad", "annotation"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", default="151676", choices=sorted(SECTIONS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipe", default="stereomm")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="component.param=value")
    args = ap.parse_args()

    from stmm_core.cli.compose_cmd import compose_spec, parse_sets
    from stmm_core.pipeline.run import fit_to_dir

    rel, label = SECTIONS[args.section]
    path = data_dir() / rel
    if not path.exists():
        sys.exit(f"data not found: {path} (set STMM_DATA)")
    base = compose_spec(args.recipe, None, {})
    overrides = parse_sets(args.sets)
    if base.components.get("image") is not None:
        overrides.setdefault("image.weights", "random")
    runs = []
    for seed in args.seeds:
        spec = base.with_overrides({**overrides, "train.seed": seed})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = fit_to_dir(spec, path, Path(tmp) / "run", labels=label, device="cpu", progress=False,
                           use_cache=True)
            wall = time.perf_counter() - t0
        c = m["clustering"]
        runs.append({"seed": seed, "ari": c["ari"], "nmi": c["nmi"], "wall_s": wall,
                     "peak_rss_mb": m["peak_rss_mb"], "stages": m["stages"],
                     "image_cached": bool(m["info"].get("image", {}).get("cached"))})
        print(f"seed {seed}: ARI {c['ari']:.3f}  NMI {c['nmi']:.3f}  wall {wall:.1f} s  "
              f"peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
    aris = [r["ari"] for r in runs]
    nmis = [r["nmi"] for r in runs]
    sd = statistics.stdev(aris) if len(aris) > 1 else 0.0
    summary = {
        "section": args.section, "recipe": args.recipe, "overrides": overrides, "label": label,
        "spec_hash": base.with_overrides(overrides).hash(),
        "ari_mean": statistics.mean(aris), "ari_sd": sd, "nmi_mean": statistics.mean(nmis),
        "runs": runs, "environment": environment(),
        "image_init": "random" if base.components.get("image") is not None else "no image",
    }
    print(f"{args.recipe} on DLPFC {args.section}: ARI {summary['ari_mean']:.3f} ± {sd:.3f} "
          f"(n={len(aris)}), NMI {summary['nmi_mean']:.3f}; reference GraphST multi-run 0.559")
    out = save(f"dlpfc_{args.recipe}_{args.section}", summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
