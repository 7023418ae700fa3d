"""Partition (mini-batch) training against full batch: one training step's loss and gradient, every bundled graph
model, as a markdown table.

    STMM_THREADS=1 .venv/bin/python benchmarks/partition_exactness.py                 # synthetic 30×30 grid
    STMM_THREADS=1 .venv/bin/python benchmarks/partition_exactness.py --dlpfc 151676  # a real section's graph

Each row: the fusion and graph model, the halo they declare (``partition_support``), the number of partitions,
the full-batch loss, the relative difference of the loss summed over partitions, the relative L2 difference of
the whole gradient (and of the worst parameter tensor), and the same gradient difference with a halo one hop
smaller than declared (which shows the declared halo is needed). Partition side: the real trainer
(``stmm_core.pipeline.minibatch.train_partitioned``, one accumulated epoch, no optimiser step); full-batch side:
the graph-fusion runner's step; both from the same random state (VAE noise, contrastive negatives).
Synthetic: 900 spots on a jittered grid, 8-neighbour radius graph, random 6-d image and 5-d gene features.
``--dlpfc``: the section's spots and 6-neighbour graph, gene features = HVG 2000 → PCA 30, no image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402

MODELS: list[tuple[str, dict]] = [
    ("vgae", {"hidden": [16], "latent": 4, "kl_weight": 0.1}),
    ("vgae", {"hidden": [16, 8], "latent": 4, "conv": "sage"}),
    ("vgae", {"hidden": [8], "latent": 4, "conv": "gat"}),
    ("contrastive-gae", {"latent": 8}),
    ("contrastive-gae", {"latent": 8, "adjacency": "graphst", "bias": False}),
    ("contrastive-gae", {"latent": 8, "corruption": "fixed"}),
    ("identity", {}),
]
FUSIONS: list[tuple[str, dict]] = [("concat", {}), ("attention", {"dim": 8, "heads": 2})]


def _synthetic(side: int = 30):
    import torch

    from stmm_core.plugins import get_catalogue

    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(float) * 10.0 + rng.uniform(0, 1, (side * side, 2))
    graph = get_catalogue().get("graph_builder", "radius").build({"radius": 15.0}).build(coords)
    n = len(coords)
    img = torch.from_numpy(rng.normal(size=(n, 6)).astype(np.float32))
    gene = torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32))
    return coords, graph.edge_index, img, gene


def _dlpfc(name: str):
    import torch

    from stmm_core.data.readers import read_section
    from stmm_core.plugins import get_catalogue

    path = data_dir() / f"dlpfc/{name}/dlpfc_{name}_5000genes_lowres.h5ad"
    section = read_section(path)
    enc = get_catalogue().get("gene_encoder", "pca").build({"n_top_genes": 2000, "pca": 30})
    gene = torch.from_numpy(np.asarray(enc.fit_transform(section), dtype=np.float32))
    graph = get_catalogue().get("graph_builder", "radius").build({}).build(section.coords, section.spot_diameter)
    return section.coords, graph.edge_index, None, gene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlpfc", metavar="SECTION", help="use a DLPFC section's graph and gene features (e.g. 151676)")
    ap.add_argument("--partition-size", type=int, default=None, help="core spots per partition (default: N/6)")
    args = ap.parse_args()

    import torch

    from stmm_core.pipeline.target import reconstruction_target
    from stmm_core.plugins import get_catalogue
    from stmm_core.seeding import configure_threads
    from stmm_core.testing.partition import compare_partition_step

    configure_threads()
    coords, ei, img, gene = _dlpfc(args.dlpfc) if args.dlpfc else _synthetic()
    n = gene.shape[0]
    size = args.partition_size or max(16, n // 6)
    where = f"DLPFC {args.dlpfc}" if args.dlpfc else "synthetic grid"
    print(f"{where}: {n} spots, {ei.shape[1]} directed edges, partitions of ~{size} core spots; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| fusion | graph model | params | hops | partitions | loss (full) | loss rel. diff | grad rel. diff | "
          "worst tensor | halo − 1 hop: grad rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cat = get_catalogue()
    for fname, fparams in FUSIONS:
        for mname, mparams in MODELS:
            torch.manual_seed(0)
            fusion = cat.get("fusion", fname).build(fparams)
            fusion.setup(None if img is None else img.shape[1], gene.shape[1])
            model = cat.get("graph_model", mname).build(mparams)
            target = reconstruction_target("inputs", fusion, img, gene)
            model.setup(fusion.out_dim, target.shape[1], n)
            d = compare_partition_step(fusion, model, img, gene, target, coords, ei, partition_size=size)
            short = "—"
            if d["hops"] > 0 and mname != "identity":
                s = compare_partition_step(fusion, model, img, gene, target, coords, ei, partition_size=size,
                                           hops=d["hops"] - 1)
                short = f"{s['grad_rel']:.1e}"
            shown = ", ".join(f"{k}={v}" for k, v in mparams.items() if k not in ("latent", "kl_weight")) or "—"
            print(f"| {fname} | {mname} | {shown} | {d['hops']} | {d['partitions']} | {d['loss_full']:.4f} | "
                  f"{d['loss_rel']:.1e} | {d['grad_rel']:.1e} | {d['grad_rel_tensor']:.1e} | {short} |", flush=True)


if __name__ == "__main__":
    main()
