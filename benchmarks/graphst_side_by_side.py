"""The `graphst` recipe beside the GraphST package on DLPFC, reusing saved fits (each fit is saved once).

    # 1. fit (resumable: one .npz per method/section/seed; the package's 600 CPU epochs take ~18 min a fit)
    .venv/bin/python benchmarks/graphst_side_by_side.py fit --method package --sections 151675 --seeds 0 --work W
    .venv/bin/python benchmarks/graphst_side_by_side.py fit --method recipe --sections 151675 151676 --seeds 0 1 2 --work W
    # 2. cluster every saved embedding the same way (stmm's gmm task + each method's own refinement) and print
    .venv/bin/python benchmarks/graphst_side_by_side.py table --work W

``--method package`` runs GraphST 1.1.1 exactly as ``stmm benchmark domains -p graphst-package`` does
(:func:`stmm_peers.graphst_pkg.cluster_domains`) and also saves the package's ``obsm["emb"]``; ``--method recipe``
runs the ``graphst`` recipe (or ``--recipe NAME``, plus ``--set key=value`` overrides) through the same fit as
``stmm fit`` / the domains suite. The saved embeddings let the table re-cluster both with one clustering.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _section_path(section: str) -> Path:
    from stmm_core.benchmark.datasets import data_root

    return data_root() / "dlpfc" / section / f"dlpfc_{section}_5000genes_lowres.h5ad"


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _tag(args: argparse.Namespace) -> str:
    if args.method == "package":
        return "graphst-package"
    return args.recipe + ("" if not args.set else "+" + ",".join(sorted(args.set)))


def fit(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.recipes import get_recipe
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    configure_threads()
    base = parse_spec(get_recipe("graphst-package" if args.method == "package" else args.recipe)["spec"])
    if args.set:
        base = base.with_overrides(_overrides(args.set))
    tag = _tag(args)
    for seed in args.seeds:
        for name in args.sections:
            out = args.work / tag / name / f"seed{seed}.npz"
            if out.exists():
                continue
            section = load_section(_section_path(name))
            out.parent.mkdir(parents=True, exist_ok=True)
            k = resolve_n_domains(section, None, "layer")
            truth = section.obs["layer"].astype(str).to_numpy()
            t0 = time.perf_counter()
            if args.method == "package":
                labels, emb, raw = _fit_package(section, k, seed, base)
            else:
                from stmm_core.pipeline.graph_fusion import fit_graph_fusion

                spec = base.with_overrides({"train.seed": seed})
                res = fit_graph_fusion(spec, section, n_domains=k, progress=False)
                labels, emb, raw = res.labels, res.embedding, np.full(len(res.labels), -1)
            sec = time.perf_counter() - t0
            ari = clustering_scores(truth, labels)["ari"]
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, labels=labels, raw=raw, embedding=emb, seconds=sec, ari=ari, truth=truth,
                                coords=np.asarray(section.coords))
            tmp.replace(out)
            print(f"{tag} {name} seed {seed}: ARI {ari:.3f} ({sec:.0f} s)", flush=True)


def _fit_package(section, k: int, seed: int, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The peers wrapper's fit, keeping the package's embedding (``obsm['emb']``)."""
    from stmm_peers import graphst_pkg

    captured = {}
    original = graphst_pkg.cluster

    def keep(embedding, n, s, task):
        captured["emb"] = np.asarray(embedding, dtype=np.float32)
        return original(embedding, n, s, task)

    graphst_pkg.cluster = keep
    task = _task(spec)
    try:
        labels, details = graphst_pkg.cluster_domains(section, n_domains=k, seed=seed, task=task)
    finally:
        graphst_pkg.cluster = original
    return np.asarray(labels), captured["emb"], np.asarray(details["unrefined_labels"])


def _task(spec):
    from stmm_core.plugins import get_catalogue

    comp = spec.components["task"]
    return get_catalogue().get("task", comp.name).build(comp.params)


def table(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores

    rows = []
    for folder in sorted(p for p in args.work.glob("*/*") if p.is_dir()):
        for path in sorted(folder.glob("seed*.npz")):
            run = np.load(path, allow_pickle=True)
            row = {"method": folder.parent.name, "section": folder.name, "seed": int(path.stem[4:]),
                   "ari": round(float(run["ari"]), 3), "seconds": round(float(run["seconds"]))}
            if int(run["raw"][0]) >= 0:
                row["ari_before_refine"] = round(clustering_scores(run["truth"], run["raw"])["ari"], 3)
            rows.append(row)
    for r in rows:
        print(json.dumps(r))
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["section"]), []).append(r["ari"])
    print("\n| method | section | seeds | ARI | mean ± sd |\n|---|---|---|---|---|")
    for (m, s), v in sorted(groups.items()):
        seeds = [r["seed"] for r in rows if (r["method"], r["section"]) == (m, s)]
        print(f"| {m} | {s} | {','.join(map(str, seeds))} | {' / '.join(f'{x:.3f}' for x in v)} | "
              f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--method", choices=["package", "recipe"], required=True)
    f.add_argument("--recipe", default="graphst")
    f.add_argument("--set", action="append", default=[], help="spec override key=value (recipe only)")
    f.add_argument("--sections", nargs="+", default=["151675", "151676"])
    f.add_argument("--seeds", nargs="+", type=int, default=[0])
    f.add_argument("--work", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    fit(args) if args.cmd == "fit" else table(args)


if __name__ == "__main__":
    main()
