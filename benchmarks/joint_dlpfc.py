"""Per-section ARI of a joint (several-section) fit, with and without the Harmony step, from one run folder.

    stmm run stereomm-expression --data 151675.h5ad 151676.h5ad -o RUN --labels layer --batch-correct harmony --seed S
    .venv/bin/python benchmarks/joint_dlpfc.py RUN --data 151675.h5ad 151676.h5ad

Harmony acts after training, on the embedding, so the run's uncorrected embedding (``obsm["X_stmm"]``) is exactly
what a fit without ``--batch-correct`` trains; this script clusters it with the spec's own task and refinement
(the code :func:`fit_graph_fusion` runs) to give the "no correction" row without a second training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--label", default="layer")
    args = ap.parse_args()

    import anndata as ad

    from stmm_graph_fusion.fit import _build
    from stmm_core.pipeline.multi_section import load_sections, section_scores
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import load_spec

    configure_threads()
    spec = load_spec(args.run / "spec.json")
    metrics = json.loads((args.run / "metrics.json").read_text())
    section = load_sections([{"data": d} for d in args.data])
    res = ad.read_h5ad(args.run / "result.h5ad")
    assert list(res.obs_names) == list(section.obs_names), "run and --data do not hold the same spots"
    k = metrics["n_domains"]
    rows = {"as fitted (" + metrics["sections"]["batch_correct"] + ")":
            res.obs["stmm_domain"].astype(str).astype(int).to_numpy()}
    emb = np.asarray(res.obsm["X_stmm"], dtype=np.float32)
    labels = np.asarray(_build("task", spec).run(emb, k, spec.train.seed), dtype=np.int64)
    if spec.domains.refine_neighbors > 1:
        labels = refine_labels(section.coords, labels, spec.domains.refine_neighbors)
    rows["no correction (X_stmm re-clustered)"] = labels
    names = list(section.obs["section"].cat.categories)
    print(f"joint fit {args.run} (seed {spec.train.seed}, K={k}, {section.n_spots} spots, "
          f"{metrics['sections']['shared_genes']} shared genes)")
    print("| clustering | " + " | ".join(f"{n} ARI" for n in names) + " | pooled ARI | same majority layer |")
    print("|---|" + "---|" * (len(names) + 2))
    for name, lab in rows.items():
        sc = section_scores(section, lab, args.label)
        print(f"| {name} | " + " | ".join(f"{sc['sections'][n]['ari']:.3f}" for n in names)
              + f" | {sc['pooled']['ari']:.3f} | {sc['domains_same_label_everywhere']} |")


if __name__ == "__main__":
    main()
