"""Feature-level informative-image bench: ARI of stereomm vs stereomm-expression as the image's information grows.

    STMM_THREADS=1 .venv/bin/python benchmarks/image_signal.py --sections 151676 151675 \
        --ratios 0 0.3 1 --seeds 3 [--set fusion.img_weight=0.5] [-o benchmarks/results/image_signal.json]

For each DLPFC section the real image features (the recipe's ResNet-50, randomly initialised, seed 0) are
encoded ONCE and cached (``--cache``, default ``/tmp/stmm-image-signal``); for each signal ratio a block that
carries the ground-truth layers (random projection of the one-hot layers + Gaussian noise, per-feature SNR 1
inside the block) is added to them (:mod:`stmm_core.benchmark.image_signal`), and the stereomm recipe is fitted
with those features in place of its encoder's; everything else (z-score + PCA, fusion with the recipe's
``img_weight``, VGAE, GMM, refinement) is the recipe's own. stereomm-expression does not see the image, so it
is fitted once per section and seed. Per run: ARI/NMI against the layers, the image weight the fit used (and
the automatic weight's evidence), and a label-free probe of the image itself (k-means ARI of its PCA features).

Writes the JSON (every run) and a plot ``<json stem>.png`` (mean ARI ± sd against the ratio, per section).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import data_dir, environment  # noqa: E402

SECTIONS = {"151676": "dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad",
            "151675": "dlpfc/151675/dlpfc_151675_5000genes_lowres.h5ad"}


def _spec(recipe: str, seed: int, sets: dict[str, Any]) -> Any:
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import apply_overrides, parse_spec

    data = get_recipe(recipe)["spec"]
    over = {k: v for k, v in sets.items() if k.split(".")[0] in data["components"] and data["components"][k.split(".")[0]]}
    if data["components"].get("image"):
        over.setdefault("image.weights", "random")
    apply_overrides(data, {**over, "train.seed": seed})
    return parse_spec(data)


def real_features(section: Any, sec_id: str, cache_dir: Path) -> Any:
    """The recipe's image features of *section* (random-init ResNet-50, seed 0), encoded once and cached."""
    import numpy as np

    from stmm_graph_fusion.fit import _build
    from stmm_core.pipeline.image_features import encode_section
    from stmm_core.seeding import seed_everything

    path = cache_dir / f"real_{sec_id}.npy"
    if path.exists():
        return np.load(path)
    spec = _spec("stereomm", 0, {})
    seed_everything(0)
    feats, _ = encode_section(section, _build("image", spec), spec.tiles, progress=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def image_probe(feats: Any, labels: Any, k: int, pca: int | None) -> float:
    """Label-free structure of the image alone: ARI of k-means (K = number of layers) on its PCA features."""
    from sklearn.cluster import KMeans

    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.image_features import reduce_image_features

    x = reduce_image_features(feats, pca, 0)
    return float(clustering_scores(labels, KMeans(k, n_init=5, random_state=0).fit_predict(x))["ari"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from stmm_core.benchmark.image_signal import informative_features
    from stmm_core.metrics import clustering_scores, labelled_mask
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import load_section
    from stmm_core.spec import parse_override_value

    sets = {k: parse_override_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    runs: list[dict[str, Any]] = []
    out = args.output
    for sec_id in args.sections:
        section = load_section(data_dir() / SECTIONS[sec_id])
        labels = section.obs["layer"].to_numpy()
        k = int(section.obs["layer"][labelled_mask(labels)].astype(str).nunique())
        real = real_features(section, sec_id, args.cache)
        for seed in range(args.seed_start, args.seed_start + args.seeds):
            expr_sc = None
            if not args.skip_expression:
                t = time.perf_counter()
                res = fit_graph_fusion(_spec("stereomm-expression", seed, sets), section, n_domains=k,
                                       progress=False)
                sc = expr_sc = clustering_scores(labels, res.labels)
                runs.append({"section": sec_id, "seed": seed, "pipeline": "stereomm-expression", "ratio": None,
                             "ari": sc["ari"], "nmi": sc["nmi"], "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(runs[-1]), flush=True)
            for ratio in args.ratios:
                feats = informative_features(real, labels, ratio, seed=seed)
                spec = _spec("stereomm", seed, sets)
                t = time.perf_counter()
                reused = False
                auto = spec.components["fusion"].params["img_weight"] == "auto"
                evidence = None
                if not auto:  # a fixed weight: record what the automatic rule would have seen (1 epoch, no fit)
                    probe = fit_graph_fusion(spec.with_overrides({"fusion.img_weight": "auto", "train.epochs": 1}),
                                             section, n_domains=None, image_features=feats, progress=False)
                    evidence = probe.info["image_weight"]
                if args.reuse_left_out and auto and expr_sc is not None:
                    # the weight alone (one training epoch, no clustering): at weight 0 the image is left out and
                    # the fit IS the stereomm-expression fit of this seed (same spec without image; bit-identical,
                    # tests/test_image_weight.py), so its scores are reused instead of training it again
                    probe = fit_graph_fusion(spec.with_overrides({"train.epochs": 1}), section, n_domains=None,
                                             image_features=feats, progress=False)
                    reused = probe.info["image_weight"]["image_left_out"]
                if reused:
                    sc, weight = expr_sc, probe.info["image_weight"]
                else:
                    res = fit_graph_fusion(spec, section, n_domains=k, image_features=feats, progress=False)
                    sc = clustering_scores(labels, res.labels)
                    weight = res.info.get("image_weight") or {"weight": spec.components["fusion"].params["img_weight"]}
                    if evidence is not None:
                        weight = {**weight, "auto_evidence": evidence}
                name = "stereomm" if auto else f"stereomm[img_weight={spec.components['fusion'].params['img_weight']:g}]"
                runs.append({"section": sec_id, "seed": seed, "pipeline": name, "ratio": ratio,
                             "ari": sc["ari"], "nmi": sc["nmi"], "image_weight": weight,
                             "reused_expression_fit": reused,
                             "image_probe_ari": round(image_probe(feats, labels, k, spec.features.image_pca), 4),
                             "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(runs[-1]), flush=True)
                if out:
                    _write(out, args, runs)
    return _write(out, args, runs) if out else {"runs": runs}


def _write(out: Path, args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    payload = {
        "command": "python benchmarks/image_signal.py " + " ".join(sys.argv[1:]),
        "sections": args.sections, "ratios": args.ratios,
        "seeds": list(range(args.seed_start, args.seed_start + args.seeds)), "set": args.set,
        "notes": ["real image features: the stereomm recipe's ResNet-50, randomly initialised (seed 0), encoded "
                  "once per section; the informative block is seeded by the run's seed",
                  "ratio = amplitude of the layer-informative block relative to the z-scored real features "
                  "(0 = the section's own features)",
                  "reused_expression_fit: the automatic weight was 0, the image was left out, and the fit is by "
                  "construction the stereomm-expression fit of the same seed (bit-identical, "
                  "tests/test_image_weight.py), so its scores were reused rather than trained again"],
        "summary": summarise(runs), "environment": environment(), "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(out)
    plot(payload, out.with_suffix(".png"))
    return payload


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd ARI per (section, pipeline, ratio), with the mean image weight and the paired difference."""
    import numpy as np

    rows = []
    keys = sorted({(r["section"], r["pipeline"], r["ratio"]) for r in runs}, key=lambda t: (t[0], t[1], t[2] or 0))
    for sec, pipe, ratio in keys:
        sel = [r for r in runs if (r["section"], r["pipeline"], r["ratio"]) == (sec, pipe, ratio)]
        ari = np.array([r["ari"] for r in sel])
        row: dict[str, Any] = {"section": sec, "pipeline": pipe, "ratio": ratio, "runs": len(sel),
                               "ari_mean": round(float(ari.mean()), 4), "ari_sd": round(float(ari.std(ddof=1)) if len(sel) > 1 else 0.0, 4)}
        if pipe != "stereomm-expression":
            row["weight_mean"] = round(float(np.mean([r["image_weight"]["weight"] for r in sel])), 3)
            base = {r["seed"]: r["ari"] for r in runs if r["section"] == sec and r["pipeline"] == "stereomm-expression"}
            diffs = [r["ari"] - base[r["seed"]] for r in sel if r["seed"] in base]
            early = [r["ari_earlier_rule"] for r in sel if "ari_earlier_rule" in r]
            if early:  # what the earlier rule's weight gave (see final_rule)
                row["ari_earlier_rule"] = [round(a, 4) for a in early]
                row["weight_earlier_rule"] = [r["weight_earlier_rule"] for r in sel if "ari_earlier_rule" in r]
            if diffs:
                row["diff_vs_expression_mean"] = round(float(np.mean(diffs)), 4)
                row["diff_vs_expression"] = [round(d, 4) for d in diffs]
        rows.append(row)
    return rows


def plot(payload: dict[str, Any], path: Path, xlabel: str = "image signal ratio (0 = the section's real features)") -> None:
    """Mean ARI ± sd against the ratio per section: stereomm (automatic weight), any fixed-weight variant, and
    stereomm-expression (a band: it does not see the image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["summary"]
    sections = sorted({r["section"] for r in rows})
    fig, axes = plt.subplots(1, len(sections), figsize=(5.5 * len(sections), 4.2), squeeze=False)
    for ax, sec in zip(axes[0], sections):
        pipes = sorted({r["pipeline"] for r in rows if r["section"] == sec and r["pipeline"] != "stereomm-expression"},
                       key=lambda p: (p != "stereomm", p))
        xs: list[float] = []
        for pipe, style in zip(pipes, ("o-", "s--", "^:", "d-.")):
            fused = sorted((r for r in rows if r["section"] == sec and r["pipeline"] == pipe), key=lambda r: r["ratio"])
            xs += [r["ratio"] for r in fused]
            label = pipe + (" (auto weight " + ", ".join(f"{r['weight_mean']:.2f}" for r in fused) + ")"
                            if pipe == "stereomm" else "")
            ax.errorbar([r["ratio"] for r in fused], [r["ari_mean"] for r in fused],
                        yerr=[r["ari_sd"] for r in fused], fmt=style, capsize=3, label=label)
        base = [r for r in rows if r["section"] == sec and r["pipeline"] == "stereomm-expression"]
        if base and xs:
            b = base[0]
            ax.axhline(b["ari_mean"], color="k", ls="--", label=f"stereomm-expression {b['ari_mean']:.3f}")
            ax.axhspan(b["ari_mean"] - b["ari_sd"], b["ari_mean"] + b["ari_sd"], color="k", alpha=0.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ARI vs layers (mean ± sd over seeds)")
        ax.set_title(f"DLPFC {sec}" + (f" · {payload['bench']}" if payload.get("bench") else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evidence(r: dict[str, Any]) -> dict[str, Any] | None:
    ev = r.get("image_weight") or {}
    if ev.get("requested") == "auto":
        return ev
    return ev.get("auto_evidence")


def final_rule(runs: list[dict[str, Any]], missing: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``stereomm`` (automatic weight) rows under the CURRENT 0-or-1 rule, derived exactly from recorded runs.

    For every (section, seed, ratio) with recorded evidence (an automatic-weight run, or the ``auto_evidence`` a
    fixed-weight run records), the current rule's weight is computed from the evidence. Weight 0: the image is
    left out and the fit is the stereomm-expression fit of that seed (bit-identical), whose scores are taken.
    Weight ``W_ON``: the fit is the fixed-weight fit with ``img_weight = W_ON`` of that seed and ratio
    (bit-identical: the weight is resolved before training, which re-seeds), whose scores are taken. Automatic
    runs made under an earlier rule are replaced (their weight and ARI kept as ``*_earlier_rule``); a needed
    fixed-weight run that is missing is refused, or, when a ``missing`` list is given, left out of the result and
    named in that list (not measured under the current rule)."""
    from stmm_core.pipeline.image_weight import W_ON, rule_text, rule_weight

    base = {(r["section"], r["seed"]): r for r in runs if r["pipeline"] == "stereomm-expression"}
    fixed = {(r["section"], r["seed"], r["ratio"]): r for r in runs
             if r["pipeline"] == f"stereomm[img_weight={W_ON:g}]"}
    earlier = {(r["section"], r["seed"], r["ratio"]): r for r in runs if r["pipeline"] == "stereomm"}
    keys = sorted({(r["section"], r["seed"], r["ratio"]) for r in runs
                   if r["pipeline"] != "stereomm-expression" and _evidence(r)}, key=lambda t: (t[0], t[1], t[2]))
    out = [r for r in runs if r["pipeline"] != "stereomm"]
    for key in keys:
        src = earlier.get(key) or fixed.get(key)
        ev = _evidence(src)
        w = rule_weight(ev["prediction_ratio"])
        row: dict[str, Any] = {"section": key[0], "seed": key[1], "pipeline": "stereomm", "ratio": key[2],
                               "image_weight": {**ev, "requested": "auto", "weight": w, "image_left_out": w == 0.0},
                               "image_probe_ari": src.get("image_probe_ari")}
        if key in earlier and earlier[key]["image_weight"].get("weight") == w and ev.get("rule") == rule_text():
            out.append(earlier[key])  # made under the current rule: it stands
            continue
        if w == 0.0:
            b = base.get(key[:2])
            if b is None:
                raise SystemExit(f"run {key}: the rule leaves the image out but no stereomm-expression run of seed "
                                 f"{key[1]} is recorded")
            row.update(ari=b["ari"], nmi=b["nmi"], reused_expression_fit=True)
        elif key in fixed:
            row.update(ari=fixed[key]["ari"], nmi=fixed[key]["nmi"], from_fixed_weight_run=True)
        elif missing is not None:
            missing.append(f"section {key[0]} seed {key[1]} ratio {key[2]:g}: the current rule gives weight {w:g}, "
                           f"no img_weight={W_ON:g} fit recorded")
            continue
        else:
            raise SystemExit(f"run {key}: the current rule gives weight {w}; re-run it with --set "
                             f"fusion.img_weight={W_ON:g}")
        if key in earlier:
            row.update(ari_earlier_rule=earlier[key]["ari"],
                       weight_earlier_rule=earlier[key]["image_weight"].get("weight"))
        out.append(row)
    return out


def markdown(runs: list[dict[str, Any]]) -> str:
    """One table row per (section, ratio): image probe, the rule's evidence and weight per seed, ARI of stereomm
    (automatic weight), of the fixed weight-1 variant and of stereomm-expression, paired differences."""
    import numpy as np

    from stmm_core.pipeline.image_weight import W_ON

    def ms(vals: list[float]) -> str:
        if not vals:
            return "–"
        sd = f" ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else ""
        return f"{np.mean(vals):.3f}{sd} ({len(vals)})"

    lines = ["| section | ratio | image-only k-means ARI | evidence per seed: coherence / prediction ratio | auto "
             "weight per seed | stereomm (auto) ARI (n) | img_weight=1 ARI (n) | stereomm-expression ARI (n) | "
             "auto − expression per seed |", "|---|---|---|---|---|---|---|---|---|"]
    fixed_name = f"stereomm[img_weight={W_ON:g}]"
    for sec in sorted({r["section"] for r in runs}):
        expr = {r["seed"]: r for r in runs if r["section"] == sec and r["pipeline"] == "stereomm-expression"}
        for ratio in sorted({r["ratio"] for r in runs if r["section"] == sec and r["ratio"] is not None}):
            auto = sorted((r for r in runs if r["section"] == sec and r["ratio"] == ratio and r["pipeline"] == "stereomm"),
                          key=lambda r: r["seed"])
            fixed = [r["ari"] for r in runs if r["section"] == sec and r["ratio"] == ratio and r["pipeline"] == fixed_name]
            probes = [r["image_probe_ari"] for r in auto if r.get("image_probe_ari") is not None]
            ev = [r["image_weight"] for r in auto]
            seeds = [r["seed"] for r in auto if r["seed"] in expr]
            lines.append(
                f"| {sec} | {ratio:g} | {np.mean(probes):.2f} | "
                + ", ".join(f"{e['coherence_ratio']:.2f} / {e['prediction_ratio']:.2f}" for e in ev) + " | "
                + ", ".join(f"{e['weight']:g}" for e in ev) + f" | {ms([r['ari'] for r in auto])} | {ms(fixed)} | "
                + f"{ms([expr[s]['ari'] for s in seeds])} | "
                + ", ".join(f"{r['ari'] - expr[r['seed']]['ari']:+.3f}" for r in auto if r["seed"] in expr) + " |")
    return "\n".join(lines)


def merge_files(paths: list[Path], out: Path) -> None:
    """``--merge A.json B.json … -o OUT``: one result from several runs (different sections or seeds)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    missing: list[str] = []
    runs = final_rule([r for p in parts for r in p["runs"]], missing)
    payload = {
        "command": " ; ".join(p["command"] for p in parts) + " ; python benchmarks/image_signal.py --merge "
                   + " ".join(str(p) for p in paths) + f" -o {out}",
        "sections": sorted({s for p in parts for s in p["sections"]}),
        "ratios": sorted({r for p in parts for r in p["ratios"]}),
        "seeds": sorted({r["seed"] for r in runs}), "set": sorted({x for p in parts for x in p["set"]}),
        "notes": parts[0]["notes"] + ["stereomm rows follow the CURRENT automatic rule, derived from the recorded "
                                      "evidence (final_rule): weight 0 -> the stereomm-expression fit of the same "
                                      "seed (reused_expression_fit), weight 1 -> the fixed img_weight=1 fit of the "
                                      "same seed and ratio (from_fixed_weight_run); ari/weight_earlier_rule keep "
                                      "what the earlier graded rule gave"],
        "not_measured_under_current_rule": missing,
        "summary": summarise(runs), "environment": parts[0]["environment"], "runs": runs,
    }
    if parts[0].get("bench"):  # the painted-texture bench (benchmarks/image_signal_painted.py)
        payload.update(bench=parts[0]["bench"], scale=parts[0].get("scale"))
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    plot(payload, out.with_suffix(".png"), **({"xlabel": "painted texture strength (0 = random layer's texture)"}
                                               if payload.get("bench") else {}))
    print(markdown(runs))
    for line in missing:
        print("not measured under the current rule:", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["151676", "151675"], choices=sorted(SECTIONS))
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.3, 1.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="override, e.g. fusion.img_weight=0.5")
    ap.add_argument("--no-reuse", dest="reuse_left_out", action="store_false",
                    help="train stereomm even when the automatic weight leaves the image out")
    ap.add_argument("--skip-expression", action="store_true",
                    help="do not fit stereomm-expression (merge with a file that has it)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/stmm-image-signal"))
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="merge result files into -o (no fits)")
    args = ap.parse_args()
    if args.merge:
        if args.output is None:
            ap.error("--merge needs -o OUT.json")
        merge_files(args.merge, args.output)
        return
    run(args)


if __name__ == "__main__":
    main()
