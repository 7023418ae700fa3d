"""Leave-one-section-out folds shared by the ``expression`` and ``retrieval`` suites.

One fold = train on every other section, evaluate on the held-out one. A fold's evaluation is stored as
``<work>/folds/<pipeline>-<spec hash>/seed<s>/<held out>/eval.json``, so running ``expression`` and then
``retrieval`` with the same ``--work`` folder trains each model once.

* magic pipelines: both stages trained on the training sections (``stmm run magic``), evaluated with
  ``stmm evaluate``'s code (per-gene Pearson over all targets and over the 50 most variable targets of the
  training sections; image → expression retrieval among all spots of the held-out section).
* ``hest-ridge``: ridge on PCA-256 of frozen pooled features of the spec's image encoder at its seeded
  initialisation (the same initialisation Magic's stage 1 starts from when the image settings agree), on
  the same target genes; retrieval scores are Pearson r between the predicted and each true profile.
  This is HEST's published protocol (fixed penalty), kept as such.
* honest baselines on the same folds: ``train-mean`` (training mean), ``ridge-cv`` (penalty by CV inside the
  training sections), ``stain-ridge`` (ridge-cv on weight-free colour statistics), ``knn-expression``
  (BLEEP-style nearest neighbours in feature space); see :func:`_ridge_fold`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.benchmark.runner import Context, NotApplicable, Unit
from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.benchmark.pipelines import BenchPipeline


def fold_pairs(ctx: Context) -> list[tuple[str, list[str], str]]:
    """``(held-out name, training paths, held-out path)`` for every dataset."""
    if len(ctx.datasets) < 2:
        raise DataError(f"the {ctx.suite} suite holds one section out at a time: give at least two sections "
                        f"(got {', '.join(d.name for d in ctx.datasets) or 'none'}), e.g. --datasets 'her2st-C*'")
    names = [d.name for d in ctx.datasets]
    held = ctx.folds or names
    unknown = [f for f in held if f not in names]
    if unknown:
        raise DataError(f"--folds {', '.join(unknown)}: not among the datasets ({', '.join(names)})")
    return [(d.name, [o.local_path for o in ctx.datasets if o.name != d.name], d.local_path) for d in ctx.datasets
            if d.name in held]


def fold_units(ctx: Context, keys: list[str], *, keep_missing: bool) -> list[Unit]:
    """One unit per (pipeline, seed, held-out section): train on the others, report ``keys`` of the fold's
    metrics (a key the pipeline did not produce is reported as None when ``keep_missing``, else left out)."""
    out = []
    for pipe in ctx.pipelines:
        for seed in ctx.seeds:
            for held, train, test in fold_pairs(ctx):
                def fn(pipe=pipe, seed=seed, held=held, train=train, test=test):
                    res = fold_eval(ctx, pipe, seed, held, train, test)
                    got = res["metrics"]
                    return {k: got.get(k) for k in keys if keep_missing or k in got}, res["details"]
                out.append(Unit(pipe, held, held, seed, fn))
    return out


#: Baseline methods that predict expression from frozen tile features (recipes with ``"method": …``).
FEATURE_BASELINES = ("hest-ridge", "ridge-cv", "stain-ridge", "knn-expression", "train-mean", "stage1-ridge")


def _ridge_fold(spec: Any, train_paths: list[str], test_path: str, device: str,
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
    from stmm_magic.metrics import mse, pearson_per_gene, pearson_per_spot, retrieval_topk
    from stmm_magic.model import params_digest
    from stmm_magic.pipeline import build_component, choose_genes, image_input_px, read_sections

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
    elif method != "train-mean":
        if method == "stage1-ridge":
            from stmm_magic.ablation import stage1_image_encoder

            if stage1 is None:
                raise NotApplicable("stage1-ridge needs a fold folder for its stage 1")
            run_dir, reuse = stage1
            enc, stage1_info = stage1_image_encoder(spec, train_paths, run_dir, reuse, device)
            digest = stage1_info["trained_params_sha256"]
        enc = enc.to(device)
        f_tr = bl.pooled_features(enc, torch.from_numpy(tiles_tr))
        f_te = bl.pooled_features(enc, torch.from_numpy(tiles_te))
    if method == "hest-ridge":
        pred, info = bl.hest_ridge(f_tr, y_tr, f_te, n_components=256, seed=seed)
    elif method in ("ridge-cv", "stage1-ridge"):
        pred, info = bl.ridge_cv(f_tr, y_tr, f_te, groups, n_components=256, seed=seed)
    elif method == "stain-ridge":
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


def _magic_fold(spec: Any, train_paths: list[str], test_path: str, run_dir: Path, device: str,
                log: Any) -> dict[str, Any]:
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


def fold_eval(ctx: Context, pipe: "BenchPipeline", seed: int, held: str, train_paths: list[str],
              test_path: str) -> dict[str, Any]:
    """Metrics and details of one fold (computed once per work folder, then read back)."""
    if pipe.kind != "magic":
        raise NotApplicable("graph-fusion pipelines cluster domains; they do not predict expression from images")
    spec = pipe.spec.with_overrides({"train.seed": seed})
    fold_dir = Path(ctx.work_dir) / "folds" / f"{pipe.name}-{spec.hash()[:12]}" / f"seed{seed}" / held
    done = fold_dir / "eval.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        cached["details"]["reused"] = str(done)
        return cached
    fold_dir.mkdir(parents=True, exist_ok=True)
    if pipe.method in FEATURE_BASELINES:
        from stmm_magic.ablation import magic_runs_in

        out = _ridge_fold(spec, train_paths, test_path, ctx.device, pipe.method,
                          (fold_dir / "stage1-run", magic_runs_in(Path(ctx.work_dir), seed, held)))
    elif pipe.method is None:
        out = _magic_fold(spec, train_paths, test_path, fold_dir / "run", ctx.device, ctx.log)
    else:
        raise NotApplicable(f"unknown benchmark method {pipe.method!r}")
    out["details"]["spec_hash"] = spec.hash()
    from stmm_core.atomic import write_text

    write_text(done, json.dumps(out, indent=1, default=float) + "\n")
    return out
