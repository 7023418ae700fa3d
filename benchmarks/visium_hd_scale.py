"""Visium HD at full-section scale: a SYNTHETIC 8 µm section of ~600k in-tissue bins written in the exact Space
Ranger 3 layout, then read (wall time, peak RSS) and optionally fitted end to end (``stmm run`` path).

    STMM_THREADS=1 .venv/bin/python benchmarks/visium_hd_scale.py --step write
    STMM_THREADS=1 .venv/bin/python benchmarks/visium_hd_scale.py --step read
    STMM_THREADS=1 .venv/bin/python benchmarks/visium_hd_scale.py --step fit --epochs 10 [--no-image]

* write: :func:`stmm_core.testing.visium_hd.write_visium_hd`, a 6.5 mm capture area (812 × 812 bins of 8 µm,
  the size of a Visium HD capture area), in-tissue disc radius 0.56 (~90 % of the area), 18,085 genes (as in the
  human probe set), ~64 UMIs per bin (synthetic, smooth domains), a 6,000-px hires and a 600-px lowres PNG.
* read: ``read_section(outs, bin_size=8)`` in a fresh process: wall time and peak RSS (``ru_maxrss``).
* fit: ``fit_to_dir`` (what ``stmm run`` calls) with the stereomm recipe: HVG 300, a randomly initialised timm
  ResNet-18 on 32-px tiles read lazily from the hires image, ``train.batch=auto`` (spatial partitions with an
  exact halo above 500k bins), ``--epochs`` epochs, GMM domains, and result.h5ad/domains.png/report written;
  ``--no-image``: the same without the image encoder.

Each step runs in its own subprocess; rows are merged into ``benchmarks/results/visium_hd_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
root = Path(args["root"])
t = time.perf_counter()
out = {"step": args["step"]}
if args["step"] == "write":
    from stmm_core.testing.visium_hd import write_visium_hd
    write_visium_hd(root, capture_um=6500, bin_sizes=(8,), n_genes=18085, umis_per_um2=1.0, hires_side=6000,
                    lowres_side=600, tissue_radius=0.56, seed=0)
elif args["step"] == "read":
    from stmm_core.data.readers import read_section
    s = read_section(root / "outs", bin_size=8)
    out.update(n_bins=s.n_spots, n_genes=s.n_genes, nnz=int(s.counts.nnz), image=s.image.describe())
else:
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.run import fit_to_dir
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec
    configure_threads()
    raw = compose_spec("stereomm", None, {"gene.n_top_genes": 300, "train.epochs": args["epochs"],
                                          "graph.hidden": [256]}).to_dict()
    if args["image"]:
        raw["components"]["image"] = {"name": "timm", "params": {"model": "resnet18", "weights": "random",
                                                                 "input_size": 32, "batch_size": 256}}
    else:
        raw["components"]["image"] = None  # expression + space only
    m = fit_to_dir(parse_spec(raw), root / "outs", root / "run", n_domains=4, progress=False)
    out.update(n_bins=m["info"]["n_spots"], stages=m["stages"], batch=m["info"].get("batch"),
               fit_wall_s=m["wall_seconds"], files=m["files"])
out["wall_s"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out, default=str))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=["write", "read", "fit"], required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--no-image", action="store_true", help="fit: no image encoder (expression + space only)")
    ap.add_argument("--root", default=os.environ.get("TMPDIR", "/tmp") + "/stmm-visium-hd/sample")
    args = ap.parse_args()
    payload = {"step": args.step, "epochs": args.epochs, "root": args.root, "image": not args.no_image}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not line:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"step {args.step} failed (exit {r.returncode})")
    row = json.loads(line[0][len("RESULT "):])
    row["command"] = (f"STMM_THREADS={os.environ.get('STMM_THREADS', '')} .venv/bin/python "
                      f"benchmarks/visium_hd_scale.py --step {args.step}"
                      + (f" --epochs {args.epochs}" if args.step == "fit" else "")
                      + (" --no-image" if args.step == "fit" and args.no_image else ""))
    row["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.step == "fit":
        row["epochs"] = args.epochs
        row["image_encoder"] = not args.no_image
    path = RESULTS / "visium_hd_scale.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": []}
    data["rows"] = [x for x in data["rows"] if x["step"] != args.step] + [row]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
