"""End-to-end informative-image bench: a per-layer texture painted into a synthetic image at the real spots.

    STMM_THREADS=1 .venv/bin/python benchmarks/image_signal_painted.py --section 151676 \
        --strengths 0 0.5 1 --seeds 3 [--expression-from benchmarks/results/image_signal.json] -o OUT.json

For each strength and seed the section's image is replaced by a painted one
(:mod:`stmm_core.benchmark.painted_texture`: stripes + tint per layer mixed with a random layer's texture,
``strength`` = share of the spot's own layer; pixel noise; painted at ``--scale`` image px per full-res px),
and the ``stereomm`` recipe runs end to end on it: tiles cut around the spots, the recipe's ResNet-50 (random
init, seeded by the run's seed as in every fit), z-score + PCA, the automatic image weight, fusion, VGAE, GMM.
The first pass trains one epoch to learn the automatic weight (and caches the encoding); when the weight is 0 the
image is left out and the fit is by construction the stereomm-expression fit of that seed (bit-identical,
tests/test_image_weight.py), whose scores are taken; otherwise the full fit runs on the cached encoding.
``stereomm-expression`` does not see the image: its scores are fitted here, or taken from a feature-level bench
result of the same section and seeds (``--expression-from``). Per run: ARI/NMI, the weight and its evidence, a
label-free probe of the image features (k-means ARI on their PCA), seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import data_dir, environment  # noqa: E402
from image_signal import SECTIONS, _spec, image_probe  # noqa: E402


def run(args: argparse.Namespace) -> dict[str, Any]:
    from stmm_core.benchmark.painted_texture import painted_section
    from stmm_core.data.cache import FeatureCache
    from stmm_core.metrics import clustering_scores, labelled_mask
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.image_features import encode_section
    from stmm_core.pipeline.run import load_section
    from stmm_core.seeding import configure_threads, seed_everything
    from stmm_core.spec import parse_override_value

    configure_threads()
    sets = {k: parse_override_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    section = load_section(data_dir() / SECTIONS[args.section])
    labels = section.obs["layer"].to_numpy()
    k = int(section.obs["layer"][labelled_mask(labels)].astype(str).nunique())
    expression: dict[int, dict[str, Any]] = {}
    if args.expression_from:
        for r in json.loads(Path(args.expression_from).read_text())["runs"]:
            if r["pipeline"] == "stereomm-expression" and r["section"] == args.section:
                expression[int(r["seed"])] = {**r, "taken_from": str(args.expression_from)}
    runs: list[dict[str, Any]] = []
    cache = FeatureCache(tempfile.mkdtemp(prefix="stmm-painted-"))
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        if seed not in expression:
            t = time.perf_counter()
            res = fit_graph_fusion(_spec("stereomm-expression", seed, sets), section, n_domains=k, progress=False)
            sc = clustering_scores(labels, res.labels)
            expression[seed] = {"section": args.section, "seed": seed, "pipeline": "stereomm-expression",
                                "ratio": None, "ari": sc["ari"], "nmi": sc["nmi"],
                                "seconds": round(time.perf_counter() - t, 1)}
        runs.append(expression[seed])
        print(json.dumps(runs[-1]), flush=True)
        for strength in args.strengths:
            t = time.perf_counter()
            painted = painted_section(section, labels, strength, seed=seed, scale=args.scale)
            spec = _spec("stereomm", seed, sets)
            auto = spec.components["fusion"].params["img_weight"] == "auto"
            probe = fit_graph_fusion(spec.with_overrides({"fusion.img_weight": "auto", "train.epochs": 1}), painted,
                                     n_domains=None, cache=cache, progress=False)
            evidence = probe.info["image_weight"]
            left_out = auto and evidence["image_left_out"]
            if left_out:
                sc = {"ari": expression[seed]["ari"], "nmi": expression[seed]["nmi"]}
            else:
                res = fit_graph_fusion(spec, painted, n_domains=k, cache=cache, progress=False)
                sc = clustering_scores(labels, res.labels)
            seed_everything(seed)  # the same encoder init as the fit: cache hit, the features the fit saw
            from stmm_graph_fusion.fit import _build

            feats, tile_info = encode_section(painted, _build("image", spec), spec.tiles, cache=cache, progress=False)
            name = "stereomm" if auto else f"stereomm[img_weight={spec.components['fusion'].params['img_weight']:g}]"
            weight = evidence if auto else {"weight": spec.components["fusion"].params["img_weight"],
                                            "auto_evidence": evidence}
            runs.append({"section": args.section, "seed": seed, "pipeline": name, "ratio": strength,
                         "ari": sc["ari"], "nmi": sc["nmi"], "image_weight": weight,
                         "reused_expression_fit": left_out, "tiles": {**tile_info, "cached": None},
                         "image_probe_ari": round(image_probe(feats, labels, k, spec.features.image_pca), 4),
                         "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(runs[-1], default=str), flush=True)
            if args.output:
                _write(args, runs)
    return _write(args, runs) if args.output else {"runs": runs}


def _write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from image_signal import plot, summarise

    payload = {
        "command": "python benchmarks/image_signal_painted.py " + " ".join(sys.argv[1:]),
        "bench": "painted texture, end to end", "sections": [args.section], "ratios": args.strengths,
        "seeds": list(range(args.seed_start, args.seed_start + args.seeds)), "set": args.set,
        "scale": args.scale,
        "notes": ["ratio = texture strength: share of the spot's own layer's texture (stripes + tint) against a "
                  "random layer's (stmm_core/benchmark/painted_texture.py); 0 = as textured but uninformative",
                  f"the synthetic image is painted at {args.scale:g} image px per full-resolution px",
                  "reused_expression_fit: the automatic weight was 0, the image was left out, the fit is the "
                  "stereomm-expression fit of the same seed"],
        "summary": summarise(runs), "environment": environment(), "runs": runs,
    }
    out = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(out)
    plot(payload, out.with_suffix(".png"), xlabel="painted texture strength (0 = random layer's texture)")
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", default="151676", choices=sorted(SECTIONS))
    ap.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1 / 3, help="image px per full-resolution px of the painting")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. fusion.img_weight=1.0")
    ap.add_argument("--expression-from", type=Path, default=None,
                    help="take stereomm-expression scores of the same section and seeds from this bench JSON")
    ap.add_argument("-o", "--output", type=Path, default=None)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
