"""Magic in the benchmark suites (called through :class:`stmm_magic.family.MagicPipeline`'s bench hooks).

* :func:`feature_fold` — the feature baselines that share Magic's spec (recipes with ``"method"``): ``hest-ridge``
  (HEST's published protocol: fixed penalty), ``ridge-cv``, ``stain-ridge``, ``knn-expression``, ``train-mean``;
* :func:`magic_fold` — both stages on the training sections, ``stmm evaluate``'s metrics on the held-out one;
* :func:`domains` — stage 1 fitted on the section itself, its unit image + gene embeddings clustered by GMM;
* :func:`speed` — reading, tiling and the two training stages from Magic's own timings, encoder throughput.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stmm_core.benchmark.runner import NotApplicable
from stmm_core.errors import DataError

#: Baseline methods that predict expression from frozen tile features (recipes with ``"method": …``).
FEATURE_BASELINES = ("hest-ridge", "ridge-cv", "stain-ridge", "knn-expression", "train-mean", "stage1-ridge",
                     "context-ridge")


def feature_fold(spec: Any, train_paths: list[str], test_path: str, device: str,
                method: str = "hest-ridge", stage1: tuple[Path, list[Path]] | None = None) -> dict[str, Any]:
    """A feature baseline on one fold: ``hest-ridge`` (HEST's published protocol: fixed penalty), ``ridge-cv``
    (same features, penalty chosen by leave-one-training-section-out CV), ``stain-ridge`` (ridge-cv on the
    weight-free ``stain-stats`` colour features), ``knn-expression`` (BLEEP-style nearest neighbours in feature
    space), ``train-mean`` (the training mean for every spot); the ablation ``stage1-ridge`` is ``ridge-cv`` on
    the stage-1-trained encoder (``stage1`` = (its run folder, Magic runs to reuse); see stmm_magic.ablation)."""
    import torch

    from stmm_core.data.cache import FeatureCache
    from stmm_core.seeding import configure_threads, seed_everything
    from stmm_magic import baseline as bl
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.evaluate import expression_scores
    from stmm_magic.genes import log1p_expression, shared_genes
    from stmm_core.expression_metrics import mse, pearson_per_gene, pearson_per_spot, retrieval_topk
    from stmm_magic.model import params_digest
    from stmm_magic.pipeline import build_component, choose_genes, fit_image_inputs, image_input_px, read_sections

    if method not in FEATURE_BASELINES:
        raise NotApplicable(f"unknown benchmark method {method!r}")

    configure_threads()
    seed = int(spec.train.seed)
    cache = FeatureCache()
    t0 = time.perf_counter()
    train = read_sections(train_paths)
    test = read_sections([test_path])[0]
    shared_genes(train, min_shared=2)
    seed_everything(seed)
    genes = choose_genes(spec, train, build_component(spec, "gene"))
    seed_everything(seed)
    enc = build_component(spec, "image")  # first module built after seeding, as in Magic's stage 1
    digest = params_digest(enc)
    target_sum = float(spec.components["decoder"].params["target_sum"])
    targets, hvg = genes["targets"], genes["eval_hvg"]
    missing = [g for g in targets if g not in set(map(str, test.gene_names))]
    if missing:
        raise DataError(f"held-out section {test.name!r} lacks {len(missing)} target gene(s), e.g. {missing[:3]}")
    hvg_idx = [targets.index(g) for g in hvg]

    def arrays(sections: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tiles, ys, groups = [], [], []
        for i, s in enumerate(sections):
            size = tile_size_fullres(s, spec.tiles.size, spec.tiles.size_factor)
            tiles.append(section_tiles(s, size, image_input_px(spec), spec.tiles.pad_value, cache))
            ys.append(log1p_expression(s, targets, target_sum))
            groups.append(np.full(s.n_spots, i))
        return np.concatenate(tiles), np.concatenate(ys), np.concatenate(groups)

    tiles_tr, y_tr, groups = arrays(train)
    tiles_te, y_te, _ = arrays([test])
    if method == "stain-ridge":
        from stmm_core.plugins import get_catalogue

        stain = get_catalogue().get("image_encoder", "stain-stats").build({})
        with torch.no_grad():
            f_tr = stain.encode(torch.from_numpy(tiles_tr)).numpy()
            f_te = stain.encode(torch.from_numpy(tiles_te)).numpy()
        digest = "stain-stats (no weights)"
    elif method == "context-ridge":
        if not callable(getattr(enc, "bank", None)):
            raise NotApplicable("context-ridge reads a feature-bank image encoder (image: stain-bank-mlp)")
        fit_image_inputs(enc, torch.from_numpy(tiles_tr))
        with torch.no_grad():
            f_tr = enc.bank(torch.from_numpy(tiles_tr)).numpy()
            f_te = enc.bank(torch.from_numpy(tiles_te)).numpy()
        digest = "feature bank (no weights)"
    elif method != "train-mean":
        fit_image_inputs(enc, torch.from_numpy(tiles_tr))  # a feature bank's z-score (a ViT: nothing)
        if method == "stage1-ridge":
            from stmm_magic.ablation import stage1_image_encoder

            if stage1 is None:
                raise NotApplicable("stage1-ridge needs a fold folder for its stage 1")
            enc, stage1_info = stage1_image_encoder(spec, train_paths, stage1[0], stage1[1], device)
            digest = stage1_info["trained_params_sha256"]
        enc = enc.to(device)
        f_tr = bl.pooled_features(enc, torch.from_numpy(tiles_tr))
        f_te = bl.pooled_features(enc, torch.from_numpy(tiles_te))
    if method == "hest-ridge":
        pred, info = bl.hest_ridge(f_tr, y_tr, f_te, n_components=256, seed=seed)
    elif method in ("ridge-cv", "stage1-ridge"):
        pred, info = bl.ridge_cv(f_tr, y_tr, f_te, groups, n_components=256, seed=seed)
    elif method in ("stain-ridge", "context-ridge"):
        pred, info = bl.ridge_cv(f_tr, y_tr, f_te, groups, n_components=None, seed=seed)
    elif method == "knn-expression":
        pred, info = bl.knn_predictor(f_tr, y_tr, f_te, groups, n_components=256, seed=seed)
    elif method == "train-mean":
        pred, info = bl.mean_predictor(y_tr, len(y_te))
    else:
        raise NotApplicable(f"unknown benchmark method {method!r}")
    pg_all = pearson_per_gene(pred, y_te, targets)
    pg_hvg = pearson_per_gene(pred[:, hvg_idx], y_te[:, hvg_idx], hvg)
    metrics = {"pearson_hvg50": pg_hvg["mean"], "pearson_all": pg_all["mean"],
               "pearson_spot": pearson_per_spot(pred, y_te)["mean"], "mse": mse(pred, y_te),
               "n_spots": float(test.n_spots)}
    if method == "stage1-ridge":
        info = {**info, "stage1": stage1_info}
    if method != "train-mean":  # a constant prediction ranks nothing
        retr = retrieval_topk(expression_scores(pred, y_te))
        metrics.update({k: retr[k] for k in ("top1", "top5", "chance_top1", "chance_top5")})
    return {
        "metrics": metrics,
        "details": {"method": method, "fit": info, "image_init_params_sha256": digest, "n_targets": len(targets),
                    "n_eval_hvg": len(hvg), "retrieval_scores": "Pearson r (predicted vs true profile)",
                    "seconds": time.perf_counter() - t0},
    }


def magic_fold(spec: Any, train_paths: list[str], test_path: str, run_dir: Path, device: str) -> dict[str, Any]:
    from stmm_magic.evaluate import evaluate_run
    from stmm_magic.pipeline import fit_magic

    t0 = time.perf_counter()
    meta = fit_magic(spec, train_paths, run_dir, device=device, log=None, overwrite=True)  # its own work folder
    fit_s = time.perf_counter() - t0
    res = evaluate_run(run_dir, test_path)
    r = res["retrieval"]
    con, dec, itm = r.get("contrastive", {}), r.get("decoder_expression", {}), r.get("itm_rerank", {})
    return {
        "metrics": {"pearson_hvg50": res["pearson_gene_hvg"]["mean"], "pearson_all": res["pearson_gene_all"]["mean"],
                    "pearson_spot": res["pearson_spot"]["mean"], "mse": res["mse"],
                    "top1": con.get("top1"), "top5": con.get("top5"),
                    "chance_top1": (con or dec).get("chance_top1"), "chance_top5": (con or dec).get("chance_top5"),
                    "top1_decoder": dec.get("top1"), "top5_decoder": dec.get("top5"),
                    "top1_itm": itm.get("top1"), "top5_itm": itm.get("top5"), "n_spots": float(res["n_spots"])},
        "details": {"image_init_params_sha256": (meta.get("image_init") or {}).get("params_sha256"),
                    "timings": meta.get("timings"), "fit_seconds": fit_s, "n_targets": res["genes"]["n_targets"],
                    "n_eval_hvg": res["genes"]["n_eval_hvg"],
                    "retrieval_scores": "top1/top5: contrastive image-gene similarity; *_decoder: Pearson r of the "
                                        "stage-2 prediction; *_itm: contrastive top-16 re-ranked by the ITM head"},
    }


def domains(spec: Any, path: str, label: str, device: str, work_dir: Path) -> tuple[Any, np.ndarray, int, dict]:
    """``(section, labels, K, details)``: stage 1 fitted on the section at *path*, embeddings clustered by GMM."""
    import torch

    from stmm_core.data.cache import FeatureCache
    from stmm_core.plugins import get_catalogue
    from stmm_core.pipeline.run import resolve_n_domains
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import fit_magic, image_input_px, read_sections
    from stmm_magic.run_io import load_run

    seed = int(spec.train.seed)
    run_dir = Path(work_dir)
    t0 = time.perf_counter()
    meta = fit_magic(spec, [path], run_dir, stage=1, device=device, overwrite=True)
    fit_s = time.perf_counter() - t0
    run = load_run(run_dir, stages=(1,))
    section = read_sections([path])[0]
    k = resolve_n_domains(section, None, label, flag="--label")
    size = tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
    tiles = section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value, FeatureCache())
    tokens = run.stage1.gene.tokenize(section)
    with torch.no_grad():
        emb = run.stage1.embed(torch.from_numpy(tiles), torch.from_numpy(tokens))
    x = torch.cat([emb["image"], emb["gene"]], dim=1).numpy().astype(np.float32)
    task = get_catalogue().get("task", "gmm").build({})
    labels = np.asarray(task.run(x, k, seed), dtype=np.int64)
    details = {"embedding": "stage-1 unit image + gene embeddings, "
               "concatenated, GMM (default params)", "fit_seconds": fit_s, "timings": meta.get("timings"),
               "stage1_epochs": spec.train.stage1.epochs, "spec_hash": spec.hash()}
    return section, labels, k, details


def speed(spec: Any, path: str, device: str) -> dict[str, Any]:
    import tempfile

    import torch

    from stmm_core.profiling import current_rss_bytes
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import build_component, fit_magic, image_input_px, read_sections

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        meta = fit_magic(spec, [path], tmp, device=device, use_cache=False)
    t = meta["timings"]
    section = read_sections([path])[0]
    size = tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
    tiles = torch.from_numpy(section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value, None)[:64])
    enc = build_component(spec, "image").to(device)
    with torch.no_grad():
        enc.eval()
        enc(tiles)  # warm-up
        t0 = time.perf_counter()
        enc(tiles)
    pipe_s = time.perf_counter() - t0
    thr = {}
    model = getattr(enc, "model", None) or getattr(enc, "vit", None)
    prepare = getattr(enc, "prepare", None)
    if model is not None and callable(prepare):
        with torch.inference_mode():
            x = prepare(tiles)
            model.forward_features(x)
            t0 = time.perf_counter()
            model.forward_features(x)
            thr["bare_forward_tiles_per_s"] = len(tiles) / (time.perf_counter() - t0)
    m = {"read_s": t.get("read_seconds"), "tiling_s": t.get("tiles_seconds"),
         "train_s": (t.get("stage1_seconds") or 0.0) + (t.get("stage2_seconds") or 0.0),
         "peak_rss_mb": current_rss_bytes() / 2**20, "total_s": time.perf_counter() - t_all,
         "encode_tiles_per_s": len(tiles) / pipe_s}
    if "bare_forward_tiles_per_s" in thr:
        m["bare_forward_tiles_per_s"] = thr["bare_forward_tiles_per_s"]
        m["pipeline_over_bare"] = thr["bare_forward_tiles_per_s"] / m["encode_tiles_per_s"]
    return {"metrics": m, "details": {"timings": t, "n_spots": section.n_spots,
                                      "note": "peak_rss_mb is the RSS at the end (magic has no per-stage sampler)"}}
