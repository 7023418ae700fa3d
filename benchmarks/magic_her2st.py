"""Magic (fixed) on HER2ST C2–C6, leave one section out, against the HEST ridge baseline.

    .venv/bin/python benchmarks/magic_her2st.py [--folds C2 C3 C4 C5 C6] [--seed 0] [--threads 1]
        [--set component.param=value ...] [--name magic_her2st]

For every fold the 4 other sections train both Magic stages (the ``magic`` recipe, tiles of one spot
diameter = 145 full-res px), then the held-out section is evaluated with ``stmm evaluate``'s code:

* per-gene Pearson over all targets (300 most expressed on the training sections) and over the 50 most
  variable targets of the TRAINING sections (fixed before any test data is read);
* image → expression retrieval among all spots of the held-out section (top-1/top-5, chance beside it).

Baseline (HEST-Benchmark protocol): ridge on PCA-256 of frozen pooled features of the SAME image encoder at
the SAME initialisation (same seed; the parameter digest is checked equal to Magic's stage-1 starting point),
on the same genes and spots. Ablations: the ridge on Magic's stage-1 (trained) encoder features, and the same
stage-2 decoder trained on the frozen encoder at its random initialisation (no stage 1), which shows what the
contrastive stage adds.

Initialisation: pretrained weights are not reachable here, so the ViT starts from random weights (seeded);
every figure in the output says so. Writes benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, data_dir, environment, save  # noqa: E402

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
SPOT_DIAMETER_PX = 145.0  # HER2ST legacy ST spot (100 µm) in full-resolution pixels


def _slim_gene(r: dict[str, Any]) -> dict[str, Any]:
    """A per-gene Pearson result without its per-gene dictionary."""
    return {k: v for k, v in r.items() if k not in ("per_gene", "constant_excluded")}


def _slim(metrics: dict[str, Any]) -> dict[str, Any]:
    """Drop per-gene dictionaries from an evaluation result."""
    out = dict(metrics)
    for key in ("pearson_gene_all", "pearson_gene_hvg"):
        if key in out:
            out[key] = _slim_gene(out[key])
    return out


def baseline_fold(run_dir: Path, train_paths: list[Path], test_path: Path, seed: int) -> dict[str, Any]:
    """HEST ridge on frozen features at Magic's initialisation, and on Magic's stage-1 encoder (ablation)."""
    import numpy as np
    import torch

    from stmm_core.data.cache import FeatureCache
    from stmm_core.seeding import seed_everything
    from stmm_magic.baseline import hest_ridge, pooled_features
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.evaluate import expression_scores
    from stmm_magic.genes import log1p_expression
    from stmm_magic.metrics import mse, pearson_per_gene, pearson_per_spot, retrieval_topk
    from stmm_magic.model import params_digest
    from stmm_magic.pipeline import build_component, image_input_px, read_sections
    from stmm_magic.run_io import load_run

    run = load_run(run_dir, stages=(1,))
    spec = run.spec
    cache = FeatureCache()
    seed_everything(int(spec.train.seed))
    enc0 = build_component(spec, "image")  # built first after seeding, exactly as in stage 1
    digest = params_digest(enc0)
    expected = run.meta["image_init"]["params_sha256"]
    if digest != expected:
        raise RuntimeError("baseline encoder initialisation differs from Magic's stage-1 initialisation")
    target_sum = float(spec.components["decoder"].params["target_sum"])
    targets, hvg = run.targets, run.eval_hvg
    hvg_idx = [targets.index(g) for g in hvg]

    def arrays(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        secs = read_sections(paths)
        tiles, ys = [], []
        for s in secs:
            size = tile_size_fullres(s, spec.tiles.size, spec.tiles.size_factor)
            tiles.append(section_tiles(s, size, image_input_px(spec), spec.tiles.pad_value, cache))
            ys.append(log1p_expression(s, targets, target_sum))
        return np.concatenate(tiles), np.concatenate(ys)

    t0 = time.perf_counter()
    tiles_tr, y_tr = arrays(train_paths)
    tiles_te, y_te = arrays([test_path])
    out: dict[str, Any] = {"image_init_params_sha256": digest, "same_init_as_magic": True}
    for name, enc in (("hest_ridge_same_init", enc0), ("ridge_on_magic_stage1_encoder", run.stage1.image)):
        f_tr = pooled_features(enc, torch.from_numpy(tiles_tr))
        f_te = pooled_features(enc, torch.from_numpy(tiles_te))
        pred, info = hest_ridge(f_tr, y_tr, f_te, n_components=256, seed=int(spec.train.seed))
        out[name] = {
            "fit": info,
            "pearson_gene_all": _slim_gene(pearson_per_gene(pred, y_te, targets)),
            "pearson_gene_hvg": _slim_gene(pearson_per_gene(pred[:, hvg_idx], y_te[:, hvg_idx], hvg)),
            "pearson_spot": pearson_per_spot(pred, y_te),
            "mse": mse(pred, y_te),
            "retrieval_expression": retrieval_topk(expression_scores(pred, y_te)),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def ablation_fold(spec: Any, run_dir: Path, train_paths: list[Path], test_path: Path) -> dict[str, Any]:
    """Stage 2 alone (same decoder, same epochs) on the frozen encoder at its initialisation: no stage 1."""
    import shutil

    from stmm_magic.evaluate import evaluate_run
    from stmm_magic.pipeline import fit_magic

    abl_dir = run_dir.parent / f"{run_dir.name}_no_stage1"
    abl_dir.mkdir(parents=True, exist_ok=True)
    for name in ("spec.json", "magic.json", "stage1.safetensors"):
        shutil.copy(run_dir / name, abl_dir / name)
    abl_spec = spec.with_overrides({"train.stage2.load": []})
    t0 = time.perf_counter()
    meta = fit_magic(abl_spec, train_paths, abl_dir, stage=2)
    res = evaluate_run(abl_dir, test_path, itm_k=0)
    return {"pearson_gene_all": _slim(res)["pearson_gene_all"], "pearson_gene_hvg": _slim(res)["pearson_gene_hvg"],
            "pearson_spot": res["pearson_spot"], "mse": res["mse"],
            "retrieval_expression": res["retrieval"]["decoder_expression"],
            "stage2_image": meta.get("stage2_image"), "seconds": time.perf_counter() - t0}


def fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["folds"]
    lines = [
        f"# Magic (fixed) on HER2ST C2–C6, leave one section out (seed {payload['seed']})",
        "",
        f"Image encoder: {payload['image_model']} at {payload['img_size']} px, **{payload['init']} initialisation** "
        "(pretrained weights not reachable); tiles 145 full-res px (one spot diameter). Expression: "
        "log1p(counts/total·1e4) of the 300 most expressed training genes; HVG = 50 most variable targets of "
        "the training sections. Baseline: HEST ridge (PCA-256 → ridge) on frozen pooled features of the same "
        "encoder at the same initialisation. Retrieval: image → expression among all N spots of the held-out "
        "section (chance top-1 = 1/N, top-5 = 5/N).",
        "",
        "| held out | N | Magic r HVG50 | Magic r all | HEST ridge r HVG50 | HEST ridge r all | ridge on Magic enc r HVG50 "
        "| no-stage-1 decoder r HVG50 | Magic retr. top-1 / top-5 (contrastive) | ITM re-rank top-1 / top-5 "
        "| chance top-1 / top-5 | stage 1 s | stage 2 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, b = r["magic"], r["baseline"]
        rc = m["retrieval"].get("contrastive", {})
        ri = m["retrieval"].get("itm_rerank", {})
        lines.append(
            f"| {r['held_out']} | {m['n_spots']} | {fmt(m['pearson_gene_hvg']['mean'])} | "
            f"{fmt(m['pearson_gene_all']['mean'])} | {fmt(b['hest_ridge_same_init']['pearson_gene_hvg']['mean'])} | "
            f"{fmt(b['hest_ridge_same_init']['pearson_gene_all']['mean'])} | "
            f"{fmt(b['ridge_on_magic_stage1_encoder']['pearson_gene_hvg']['mean'])} | "
            f"{fmt(b.get('decoder_on_random_frozen_encoder', {}).get('pearson_gene_hvg', {}).get('mean'))} | "
            f"{fmt(rc.get('top1'))} / {fmt(rc.get('top5'))} | {fmt(ri.get('top1'))} / {fmt(ri.get('top5'))} | "
            f"{fmt(rc.get('chance_top1'))} / {fmt(rc.get('chance_top5'))} | "
            f"{r['timings']['stage1_seconds']:.0f} | {r['timings']['stage2_seconds']:.0f} |"
        )
    s = payload["summary"]
    lines.append(
        f"| **mean** | | **{fmt(s['magic_r_hvg'])}** | **{fmt(s['magic_r_all'])}** | **{fmt(s['hest_r_hvg'])}** | "
        f"**{fmt(s['hest_r_all'])}** | {fmt(s['ridge_magic_enc_r_hvg'])} | {fmt(s.get('no_stage1_r_hvg'))} | "
        f"{fmt(s['magic_top1'])} / "
        f"{fmt(s['magic_top5'])} | {fmt(s['itm_top1'])} / {fmt(s['itm_top5'])} | {fmt(s['chance_top1'])} / "
        f"{fmt(s['chance_top5'])} | {s['stage1_seconds']:.0f} | {s['stage2_seconds']:.0f} |"
    )
    lines += ["", f"Magic beats the HEST baseline on mean HVG-50 Pearson: **{s['magic_beats_baseline_hvg']}** "
              f"(difference {s['magic_r_hvg'] - s['hest_r_hvg']:+.3f}); on all targets: "
              f"**{s['magic_beats_baseline_all']}** ({s['magic_r_all'] - s['hest_r_all']:+.3f}).",
              f"Total wall time {payload['wall_seconds'] / 60:.1f} min on {payload['environment']['threads']} "
              f"torch thread(s); command: `{payload['command']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", nargs="+", default=SECTIONS, choices=SECTIONS, help="sections to hold out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is faster than 2 on a shared 2-core machine)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="component.param=value")
    ap.add_argument("--name", default="magic_her2st")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the ablation: the same stage-2 decoder on the frozen encoder at its random "
                         "initialisation (no stage 1), which shows what stage 1 adds")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stmm_core.cli.compose_cmd import compose_spec, parse_sets
    from stmm_magic.evaluate import evaluate_run
    from stmm_magic.pipeline import fit_magic

    paths = {s: data_dir() / "her2st" / "h5ad" / f"her2st_{s}.h5ad" for s in SECTIONS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        sys.exit(f"HER2ST sections not found: {missing[0]} (set STMM_DATA)")
    sets = {"tiles.size": SPOT_DIAMETER_PX, "train.seed": args.seed, **parse_sets(args.sets)}
    spec = compose_spec("magic", None, sets)
    t_all = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="magic-her2st-"))
    folds = []
    for held in args.folds:
        train = [paths[s] for s in SECTIONS if s != held]
        run_dir = root / f"fold_{held}"
        print(f"== fold: hold out {held}, train on {', '.join(s for s in SECTIONS if s != held)}", flush=True)
        meta = fit_magic(spec, train, run_dir, log=lambda m: print("  " + m, flush=True))
        t0 = time.perf_counter()
        res = evaluate_run(run_dir, paths[held])
        eval_s = time.perf_counter() - t0
        base = baseline_fold(run_dir, train, paths[held], args.seed)
        if not args.no_ablation:
            base["decoder_on_random_frozen_encoder"] = ablation_fold(spec, run_dir, train, paths[held])
        rc = res["retrieval"].get("contrastive", {})
        print(f"  Magic r HVG {res['pearson_gene_hvg']['mean']:.3f} all {res['pearson_gene_all']['mean']:.3f} | "
              f"HEST ridge r HVG {base['hest_ridge_same_init']['pearson_gene_hvg']['mean']:.3f} all "
              f"{base['hest_ridge_same_init']['pearson_gene_all']['mean']:.3f} | retrieval top-1 "
              f"{rc.get('top1', float('nan')):.3f} top-5 {rc.get('top5', float('nan')):.3f} "
              f"(chance {rc.get('chance_top1', float('nan')):.3f}/{rc.get('chance_top5', float('nan')):.3f})",
              flush=True)
        folds.append({"held_out": held, "train": [s for s in SECTIONS if s != held], "magic": _slim(res),
                      "baseline": base, "timings": {**meta["timings"], "evaluate_seconds": eval_s},
                      "image_init": meta.get("image_init"), "history_stage1": meta.get("history_stage1"),
                      "history_stage2": meta.get("history_stage2")})

    def mean(values: list[float]) -> float:
        return float(statistics.fmean(values))

    m_hvg = mean([f["magic"]["pearson_gene_hvg"]["mean"] for f in folds])
    m_all = mean([f["magic"]["pearson_gene_all"]["mean"] for f in folds])
    b_hvg = mean([f["baseline"]["hest_ridge_same_init"]["pearson_gene_hvg"]["mean"] for f in folds])
    b_all = mean([f["baseline"]["hest_ridge_same_init"]["pearson_gene_all"]["mean"] for f in folds])
    summary = {
        "magic_r_hvg": m_hvg, "magic_r_all": m_all, "hest_r_hvg": b_hvg, "hest_r_all": b_all,
        "ridge_magic_enc_r_hvg": mean([f["baseline"]["ridge_on_magic_stage1_encoder"]["pearson_gene_hvg"]["mean"]
                                       for f in folds]),
        "ridge_magic_enc_r_all": mean([f["baseline"]["ridge_on_magic_stage1_encoder"]["pearson_gene_all"]["mean"]
                                       for f in folds]),
        "magic_spot_r": mean([f["magic"]["pearson_spot"]["mean"] for f in folds]),
        "hest_spot_r": mean([f["baseline"]["hest_ridge_same_init"]["pearson_spot"]["mean"] for f in folds]),
        "magic_top1": mean([f["magic"]["retrieval"]["contrastive"]["top1"] for f in folds]),
        "magic_top5": mean([f["magic"]["retrieval"]["contrastive"]["top5"] for f in folds]),
        "itm_top1": mean([f["magic"]["retrieval"]["itm_rerank"]["top1"] for f in folds]),
        "itm_top5": mean([f["magic"]["retrieval"]["itm_rerank"]["top5"] for f in folds]),
        "decoder_expr_top1": mean([f["magic"]["retrieval"]["decoder_expression"]["top1"] for f in folds]),
        "hest_expr_top1": mean([f["baseline"]["hest_ridge_same_init"]["retrieval_expression"]["top1"]
                                for f in folds]),
        "chance_top1": mean([f["magic"]["retrieval"]["contrastive"]["chance_top1"] for f in folds]),
        "chance_top5": mean([f["magic"]["retrieval"]["contrastive"]["chance_top5"] for f in folds]),
        "stage1_seconds": mean([f["timings"]["stage1_seconds"] for f in folds]),
        "stage2_seconds": mean([f["timings"]["stage2_seconds"] for f in folds]),
    }
    if not args.no_ablation:
        summary["no_stage1_r_hvg"] = mean([f["baseline"]["decoder_on_random_frozen_encoder"]["pearson_gene_hvg"]["mean"]
                                           for f in folds])
        summary["no_stage1_r_all"] = mean([f["baseline"]["decoder_on_random_frozen_encoder"]["pearson_gene_all"]["mean"]
                                           for f in folds])
    summary["magic_beats_baseline_hvg"] = bool(m_hvg > b_hvg)
    summary["magic_beats_baseline_all"] = bool(m_all > b_all)
    params = spec.components["image"].params
    payload = {
        "benchmark": "HER2ST C2-C6 leave-one-section-out, Magic (fixed) vs HEST ridge baseline",
        "command": "python benchmarks/magic_her2st.py " + " ".join(sys.argv[1:]),
        "seed": args.seed, "spec": spec.to_dict(), "spec_hash": spec.hash(),
        "image_model": params.get("model"), "img_size": params.get("img_size"),
        "init": params.get("weights"), "environment": environment(), "folds": folds, "summary": summary,
        "wall_seconds": time.perf_counter() - t_all,
        "notes": ["All figures use a RANDOMLY initialised ViT (pretrained weights not reachable offline).",
                  "HVG genes and targets are chosen on the training sections of each fold only."],
    }
    out = save(args.name, payload)
    md = RESULTS / f"{args.name}.md"
    md.write_text(markdown(payload))
    print(markdown(payload))
    print(f"wrote {out} and {md}")


if __name__ == "__main__":
    main()
