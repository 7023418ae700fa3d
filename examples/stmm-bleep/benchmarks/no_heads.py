"""Ablation: does the contrastive training of the heads earn its place?

The same frozen ``stain-stats`` tile features as the ``bleep`` recipe, z-scored with the training statistics, but
**no trained heads**: each held-out spot's expression is the softmax(cosine / T)-weighted mean of the ``k`` training
spots nearest in image-feature space (image → image retrieval), with the recipe's ``k=100``, ``T=0.2``, and the
same targets and evaluation genes. HER2ST C2–C6, leave one section out (deterministic: no seed).

    pip install examples/stmm-bleep
    STMM_THREADS=1 python examples/stmm-bleep/benchmarks/no_heads.py     # STMM_DATA: the shared data folder
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def main() -> None:
    from stmm_bleep.genes import choose_targets, log1p_targets
    from stmm_bleep.model import build_component
    from stmm_bleep.retrieve import knn_predict, l2_normalise
    from stmm_core.data.cache import FeatureCache
    from stmm_core.data.readers import read_section
    from stmm_core.expression_metrics import mse, pearson_per_gene, pearson_per_spot
    from stmm_core.pipeline.image_features import encode_section
    from stmm_core.recipes import get_recipe
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    configure_threads()
    root = Path(os.environ.get("STMM_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))
    path = str(root / "her2st" / "h5ad" / "her2st_{}.h5ad")
    spec = parse_spec(get_recipe("bleep")["spec"])
    p = spec.train
    encoder, cache = build_component(spec, "image"), FeatureCache()
    names = ["C2", "C3", "C4", "C5", "C6"]
    rows = []
    for held in names:
        train = [read_section(path.format(n)) for n in names if n != held]
        test = read_section(path.format(held))
        genes = choose_targets(train, p.n_targets, p.n_eval_hvg, p.target_sum)
        feats = [encode_section(s, encoder, spec.tiles, cache=cache, progress=False)[0] for s in [*train, test]]
        x = np.concatenate(feats[:-1])
        mu, sd = x.mean(0), x.std(0)
        sd[sd < 1e-8] = 1.0
        y = np.concatenate([log1p_targets(s, genes["targets"], p.target_sum) for s in train])
        truth = log1p_targets(test, genes["targets"], p.target_sum)
        pred = knn_predict(l2_normalise((feats[-1] - mu) / sd), l2_normalise((x - mu) / sd), y, p.k,
                           p.predict_temperature)
        hvg = [genes["targets"].index(g) for g in genes["eval_hvg"]]
        rows.append({"held_out": f"her2st-{held}",
                     "pearson_hvg50": pearson_per_gene(pred[:, hvg], truth[:, hvg])["mean"],
                     "pearson_all": pearson_per_gene(pred, truth)["mean"],
                     "pearson_spot": pearson_per_spot(pred, truth)["mean"], "mse": mse(pred, truth)})
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    for key in ("pearson_hvg50", "pearson_all", "pearson_spot", "mse"):
        v = [r[key] for r in rows]
        print(f"{key}: {np.mean(v):.3f} ± {np.std(v, ddof=1):.3f} over {len(v)} folds")


if __name__ == "__main__":
    main()
