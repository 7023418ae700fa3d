"""How Magic's read-out ensemble (``decoder.ensemble``) was chosen: read-outs of one finished Magic run, scored on
its held-out section (the declared tuning fold HER2ST C2 chose the ensemble; the same script decomposes the confirmation folds' runs
afterwards, which chose nothing).

Given a Magic run folder trained on the other C sections, prints per-gene Pearson r (50 training HVGs / all
targets) of: the decoder alone; ridge-cv on the stage-1 embedding (``stage1-ridge``); ridge-cv on the frozen bank
(``context-ridge``); the BLEEP-style retrieval in stage 1's joint space for several k; and their equal-weight
averages. A run trained with an ensemble is read with its ensemble switched off for the "decoder" line.

    stmm benchmark expression -p magic -d 'her2st-C*' --folds her2st-C2 --seeds 1 --seed-start 1 --part C2 -o OUT --work W
    python benchmarks/magic_readout_tuning.py W/folds/magic-*/seed1/her2st-C2/run --held-out C2
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="Magic run folder (stage 1 + stage 2)")
    ap.add_argument("--held-out", default="C2", help="held-out HER2ST section: a C section (the other C sections "
                                                     "trained the run) or A1 (C2-C6 trained it)")
    ap.add_argument("--data", default=os.environ.get("STMM_DATA", "../shared/data"), help="data folder")
    a = ap.parse_args()

    import torch

    from stmm_core.data.cache import FeatureCache
    from stmm_core.expression_metrics import pearson_per_gene
    from stmm_core.seeding import configure_threads
    from stmm_magic import baseline as bl
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.genes import log1p_expression
    from stmm_magic.pipeline import image_input_px, read_sections
    from stmm_magic.run_io import load_run

    configure_threads()
    path = os.path.join(a.data, "her2st", "h5ad", "her2st_{}.h5ad")
    train_names = [n for n in ("C2", "C3", "C4", "C5", "C6") if n != a.held_out]
    run = load_run(a.run)
    spec, targets, hvg = run.spec, run.targets, run.eval_hvg
    hidx = [targets.index(g) for g in hvg]
    target_sum = float(spec.components["decoder"].params["target_sum"])
    cache = FeatureCache()

    def arrays(sections):
        tiles, ys = [], []
        for s in sections:
            size = tile_size_fullres(s, spec.tiles.size, spec.tiles.size_factor)
            tiles.append(section_tiles(s, size, image_input_px(spec), spec.tiles.pad_value, cache))
            ys.append(log1p_expression(s, targets, target_sum))
        return tiles, ys

    train = read_sections([path.format(n) for n in train_names])
    test = read_sections([path.format(a.held_out)])
    t_tr, y_tr_list = arrays(train)
    t_te, y_te = arrays(test)
    y_tr, y_te, tiles_te = np.concatenate(y_tr_list), y_te[0], torch.from_numpy(t_te[0])
    groups = np.concatenate([np.full(len(t), i) for i, t in enumerate(t_tr)])
    enc, dec = run.stage2.image, run.stage2.decoder

    def score(name: str, pred: np.ndarray) -> None:
        h = pearson_per_gene(pred[:, hidx], y_te[:, hidx], hvg)["mean"]
        al = pearson_per_gene(pred, y_te, targets)["mean"]
        print(f"{name:40s} {h:.3f} / {al:.3f}", flush=True)

    if getattr(dec, "members", None):
        dec.ensemble_fitted.fill_(0)  # the decoder's own prediction
    pred_dec = run.stage2.predict(tiles_te).numpy()
    pooled_tr = np.concatenate([bl.pooled_features(enc, torch.from_numpy(t)) for t in t_tr])
    pooled_te = bl.pooled_features(enc, tiles_te)
    with torch.no_grad():
        bank_tr = np.concatenate([enc.bank(torch.from_numpy(t)).numpy() for t in t_tr])
        bank_te = enc.bank(tiles_te).numpy()
    ridge_s1, _ = bl.ridge_cv(pooled_tr, y_tr, pooled_te, groups, n_components=256)
    ridge_ctx, _ = bl.ridge_cv(bank_tr, y_tr, bank_te, groups, n_components=None)
    s1 = run.stage1
    gene_emb = np.concatenate([s1.embed(tokens=torch.from_numpy(s1.gene.tokenize(s)))["gene"].numpy() for s in train])
    img_emb = s1.embed(tiles=tiles_te)["image"].numpy()
    order = np.argsort(-(img_emb @ gene_emb.T), axis=1)
    retr = {k: y_tr[order[:, :k]].mean(1) for k in (10, 25, 50, 100)}
    print(f"held out {a.held_out}; per-gene r HVG-50 / all {len(targets)} targets")
    score("decoder", pred_dec)
    score("ridge on the stage-1 embedding", ridge_s1)
    score("ridge on the bank (context-ridge)", ridge_ctx)
    for k, p in retr.items():
        score(f"retrieval k={k}", p)
    score("decoder + stage-1 ridge", (pred_dec + ridge_s1) / 2)
    score("decoder + context-ridge", (pred_dec + ridge_ctx) / 2)
    for k in (25, 50):
        score(f"decoder + stage-1 ridge + retrieval k={k}", (pred_dec + ridge_s1 + retr[k]) / 3)
    score("decoder + context-ridge + retrieval k=50", (pred_dec + ridge_ctx + retr[50]) / 3)


if __name__ == "__main__":
    main()
