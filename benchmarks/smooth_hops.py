"""How many rounds of neighbourhood averaging the ``expression-smooth-gmm`` baseline takes (its ``graph.hops``).

    .venv/bin/python benchmarks/smooth_hops.py --sections 151676 151510 151675 --hops 0 1 2 3 5 8 --seeds 6

For each section: the recipe's gene features (HVG 3000 → PCA 30) and radius graph once, then for each ``hops``
the ``propagate`` graph model's embedding and, for clustering seeds ``0 … seeds-1``, the recipe's task (PCA 20 →
tied Gaussian mixture, 20 restarts) and refinement (7 neighbours) — the recipe's own components, without the
runner around them, so the features are computed once. Prints ARI mean ± sd over the clustering seeds (the
embedding itself does not depend on the seed). The recipe's ``hops = 2`` was chosen on 151676 + 151510; 151675 is
the confirmation.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["151676", "151510", "151675"])
    ap.add_argument("--hops", nargs="+", type=int, default=[0, 1, 2, 3, 5, 8])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--flavor", default="seurat", help="gene.flavor of the features (seurat: as when hops was chosen)")
    args = ap.parse_args()

    import torch

    from consensus_dlpfc import _label_column, _section_path
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.pipeline_base import build_component
    from stmm_core.recipes import get_recipe
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec
    from stmm_graph.layers import graph_context

    configure_threads()
    # the recipe's spec as of the fourth round, when hops was chosen (Seurat-dispersion HVGs; the recipe switched
    # to Seurat v3 in the sixth round): --flavor seurat_v3 for today's features
    base = parse_spec(get_recipe("expression-smooth-gmm")["spec"]).with_overrides({"gene.flavor": args.flavor})
    for name in args.sections:
        section = load_section(_section_path(name))
        col = _label_column(name)
        k = resolve_n_domains(section, None, col)
        truth = section.obs[col].to_numpy()
        gene = build_component(base, "gene").fit(section)
        x = torch.from_numpy(np.asarray(gene.transform(section), dtype=np.float32))
        ctx = graph_context(build_component(base, "builder").build(section.coords), adj=False)
        for hops in args.hops:
            spec = base.with_overrides({"graph.hops": hops})
            model = build_component(spec, "graph")
            model.setup(x.shape[1], x.shape[1], x.shape[0])
            emb = model(x, ctx).clustered().numpy()
            task = build_component(spec, "task")
            aris = [clustering_scores(truth, refine_labels(section.coords, task.run(emb, k, seed),
                                                           spec.domains.refine_neighbors))["ari"]
                    for seed in range(args.seeds)]
            print(f"| {name} | {hops} | {np.mean(aris):.3f} ± {np.std(aris, ddof=1):.3f} | "
                  f"{' '.join(f'{a:.3f}' for a in aris)} |", flush=True)


if __name__ == "__main__":
    main()
