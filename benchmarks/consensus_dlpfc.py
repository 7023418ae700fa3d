"""Consensus of seeds vs single seeds on DLPFC, reusing saved single-seed fits.

    # 1. fit single seeds once per section, saving labels + embedding (one .npz per seed; resumable)
    .venv/bin/python benchmarks/consensus_dlpfc.py fit --sections 151675 151676 --seeds 15 --work W
    # 2. form consensus sets offline and print the table
    .venv/bin/python benchmarks/consensus_dlpfc.py table --sections 151675 151676 --n 5 --work W
    # 3. which seeds land on the same solution (pairwise ARI) and whether label-free scores rank the fits
    .venv/bin/python benchmarks/consensus_dlpfc.py pairs --sections 151676 151675 --work W
    # 4. how the consensus spread falls with the number of seeds (bootstrap from the saved fits)
    .venv/bin/python benchmarks/consensus_dlpfc.py bootstrap --sections 151676 151675 --sizes 5 10 15 20 --work W
    #    (--mode embedding|coassoc: each drawn set combined with that domains.consensus_mode)

Step 1 calls the same fit as ``stmm fit`` / the domains suite (:func:`fit_graph_fusion`, recipe defaults).
Step 2 forms the consensus of seed set ``s`` from seeds ``s*n … s*n+n-1`` (disjoint sets; the same rule as
``stmm fit --consensus n --seed s``) with :func:`stmm_core.pipeline.consensus.consensus_labels`, the code behind
``--consensus``, and compares:

- single seeds: mean and sd of the ARI of every single seed (the seed-to-seed spread of one fit);
- consensus: mean and sd of the ARI of the consensus sets (the spread of the consensus over disjoint seed sets).

Step 3 estimates the spread of an N-seed consensus for N larger than the saved fits allow in disjoint sets: it
draws ``--draws`` seed sets of size N *with replacement* from the saved single fits (the bootstrap: the saved
fits stand for the distribution of fits of the recipe), forms each set's consensus with the same code, and
reports the mean and sd of their ARI and the sd relative to the single-seed sd. A seed drawn twice votes twice,
as a fresh seed landing on the same solution would.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _section_path(section: str) -> Path:
    """A DLPFC section by number, or ``her2st-C1`` … ``her2st-H1`` (pathologist-labelled HER2ST sections, joined
    from the shared counts, spot files and labels by ``her2st_labelled.py`` into ``$STMM_BENCH_CACHE`` on first
    use, default ``~/.cache/stmm``)."""
    from stmm_core.benchmark.datasets import data_root

    if section.startswith("her2st-"):
        from her2st_labelled import build  # type: ignore[import-not-found]  (this folder)

        cache = Path(os.environ.get("STMM_BENCH_CACHE", Path.home() / ".cache" / "stmm")) / "her2st_labelled"
        return build(section.removeprefix("her2st-"), cache)
    if section == "151510":  # the 500-gene file the recipe defaults were chosen on
        return data_root() / "dlpfc" / "151510_drsc_500genes" / "dlpfc_151510_500genes_lowres.h5ad"
    return data_root() / "dlpfc" / section / f"dlpfc_{section}_5000genes_lowres.h5ad"


def _label_column(section: str) -> str:
    if section.startswith("her2st-"):
        return "label"
    return "annotation" if section == "151510" else "layer"


def _spec(args: argparse.Namespace):
    """The recipe's spec with ``--set key=value`` overrides (values parsed as JSON where they parse)."""
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    spec = parse_spec(get_recipe(args.recipe)["spec"])
    overrides = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return spec.with_overrides(overrides) if overrides else spec


def _folder(args: argparse.Namespace) -> str:
    """``RECIPE@HASH8`` of the spec the fits use (the recipe with any ``--set``), ``…+shared`` with
    ``--shared-genes``: fits of different specs never share a folder, even when a recipe's defaults change.
    (Folders written before the sixth round held the recipe's own spec as plain ``RECIPE``; they were renamed to
    ``RECIPE@HASH8``.)"""
    return f"{args.recipe}@{_spec(args).hash()[:8]}" + ("+shared" if getattr(args, "shared_genes", False) else "")


def _restrict_to_shared_genes(sections: dict) -> dict:
    """Each section restricted to the genes all of them hold (the gene set a joint ``--data A B`` fit uses)."""
    import dataclasses

    shared = None
    for sec in sections.values():
        names = set(map(str, sec.gene_names))
        shared = names if shared is None else shared & names
    out = {}
    for name, sec in sections.items():
        keep = np.flatnonzero(np.isin(np.asarray(sec.gene_names).astype(str), sorted(shared)))
        out[name] = dataclasses.replace(
            sec, counts=sec.counts[:, keep].tocsr(), gene_names=sec.gene_names[keep],
            gene_symbols=None if sec.gene_symbols is None else sec.gene_symbols[keep], adata=None)
        print(f"{name}: {len(keep)} shared genes of {sec.n_genes}", flush=True)
    return out


def fit(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.seeding import configure_threads

    configure_threads()
    base = _spec(args)
    sections = {s: load_section(_section_path(s)) for s in args.sections}
    if args.shared_genes:
        sections = _restrict_to_shared_genes(sections)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    for seed in (seeds[::-1] if args.reverse else seeds):  # a second process can work from the other end
        for name, section in sections.items():
            out = args.work / _folder(args) / name / f"seed{seed}.npz"
            if out.exists():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            col = _label_column(name)
            k = resolve_n_domains(section, None, col)
            spec = base.with_overrides({"train.seed": seed})
            t0 = time.perf_counter()
            res = fit_graph_fusion(spec, section, n_domains=k, progress=False)
            sec = time.perf_counter() - t0
            scores = clustering_scores(section.obs[col].to_numpy(), res.labels)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, labels=res.labels, embedding=res.embedding, seconds=sec, ari=scores["ari"],
                                spec_hash=spec.hash(), truth=section.obs[col].astype(str).to_numpy())
            tmp.replace(out)
            print(f"{name} seed {seed}: ARI {scores['ari']:.3f} ({sec:.0f} s)", flush=True)


def _saved_runs(args: argparse.Namespace, name: str) -> tuple[list[int], dict]:
    """The seeds saved by ``fit`` for one section, and their ``.npz`` files (labels, embedding, scores)."""
    folder = args.work / _folder(args) / name
    seeds = sorted(int(p.stem[4:]) for p in folder.glob("seed*.npz"))
    runs = {s: np.load(folder / f"seed{s}.npz", allow_pickle=True) for s in seeds}
    spec = _spec(args)  # each fit saved the hash of the spec with its own train.seed
    wrong = [s for s in seeds if str(runs[s]["spec_hash"]) != spec.with_overrides({"train.seed": s}).hash()]
    if wrong:
        raise SystemExit(f"{folder}: seeds {wrong} were fitted with another spec than {spec.hash()[:12]}")
    return seeds, runs


def table(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores
    from sklearn.metrics import adjusted_rand_score  # noqa: F401  (imported before the consensus step is timed)

    from stmm_core.pipeline.consensus import consensus_labels

    rows = []
    for name in args.sections:
        seeds, runs = _saved_runs(args, name)
        truth = runs[seeds[0]]["truth"]
        single = np.array([float(runs[s]["ari"]) for s in seeds])
        secs = np.array([float(runs[s]["seconds"]) for s in seeds])
        n_sets = len(seeds) // args.n
        cons, agree, conf, cost = [], [], [], []
        for s in range(n_sets):
            members = [s * args.n + i for i in range(args.n)]
            if not all(m in runs for m in members):
                continue
            t0 = time.perf_counter()
            if args.mode == "coassoc":  # domains.consensus_mode=coassoc, consensus seed s
                from stmm_core.pipeline.consensus_coassoc import consensus_coassoc
                from stmm_core.pipeline.run import load_section

                refine = _spec(args).domains.refine_neighbors
                c = consensus_coassoc([runs[m]["labels"] for m in members], len(np.unique(runs[members[0]]["labels"])),
                                      s, load_section(_section_path(name)).coords, refine)
            else:
                c = consensus_labels([runs[m]["labels"] for m in members])
            cost.append(time.perf_counter() - t0)
            cons.append(clustering_scores(truth, c.labels)["ari"])
            if args.plots and s == args.plot_set:  # the confidence map of the first seed set, as `stmm fit --consensus` draws it
                from stmm_core.pipeline.run import load_section
                from stmm_core.plots_confidence import plot_confidence

                args.plots.mkdir(parents=True, exist_ok=True)
                plot_confidence(load_section(_section_path(name)), c.labels, c.confidence,
                                args.plots / f"confidence-{name}-{args.mode}-set{s}.png", truth=truth,
                                title=f"{args.recipe} · {name} · seeds {members[0]}–{members[-1]}",
                                summary=c.summary(members))
            agree.append((c.seed_ari_mean, c.seed_ari_min))
            conf.append(float(c.confidence.mean()))
        rows.append({"section": name, "single_n": len(seeds), "single_mean": single.mean(),
                     "single_sd": single.std(ddof=1) if len(single) > 1 else 0.0, "single_min": single.min(),
                     "single_max": single.max(), "fit_s": secs.mean(), "sets": len(cons),
                     "cons": cons, "cons_mean": float(np.mean(cons)) if cons else float("nan"),
                     "cons_sd": float(np.std(cons, ddof=1)) if len(cons) > 1 else float("nan"),
                     "seed_ari": agree, "confidence": conf, "consensus_s": float(np.mean(cost)) if cost else 0.0})
    print(f"recipe {args.recipe}; consensus of {args.n} seeds, seed set s = seeds s*{args.n} … s*{args.n}+{args.n - 1}")
    print("| section | single seeds: n, ARI mean ± sd (min–max) | consensus sets: ARI each | consensus mean ± sd "
          "| sd ratio | seed-to-seed ARI mean / min per set | mean confidence | fit s/seed | consensus step s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["cons_sd"] / r["single_sd"] if r["single_sd"] else float("nan")
        print(f"| {r['section']} | {r['single_n']}: {r['single_mean']:.3f} ± {r['single_sd']:.3f} "
              f"({r['single_min']:.3f}–{r['single_max']:.3f}) | {' / '.join(f'{c:.3f}' for c in r['cons'])} | "
              f"{r['cons_mean']:.3f} ± {r['cons_sd']:.3f} | {ratio:.2f} | "
              f"{'; '.join(f'{a:.2f}/{b:.2f}' for a, b in r['seed_ari'])} | "
              f"{' / '.join(f'{c:.2f}' for c in r['confidence'])} | {r['fit_s']:.0f} | {r['consensus_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float) + "\n")


def bootstrap(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.consensus import consensus_labels

    rows = []
    for name in args.sections:
        seeds, runs = _saved_runs(args, name)
        truth = runs[seeds[0]]["truth"]
        single = np.array([float(runs[s]["ari"]) for s in seeds])
        sd1 = float(single.std(ddof=1))
        rng = np.random.default_rng(args.draw_seed)
        if args.mode in ("embedding", "coassoc"):
            from stmm_core.pipeline.consensus_coassoc import consensus_coassoc
            from stmm_core.pipeline.consensus_embed import consensus_embedding
            from stmm_core.pipeline.run import load_section

            spec = _spec(args)
            coords = load_section(_section_path(name)).coords
            k = max(len(np.unique(r["labels"])) for r in runs.values())
        for n in args.sizes:
            aris = []
            for _ in range(args.draws):
                members = rng.choice(seeds, size=n, replace=True)
                if args.mode == "embedding":  # domains.consensus_mode=embedding on the same members
                    c = consensus_embedding(spec, [runs[int(m)]["embedding"] for m in members],
                                            [runs[int(m)]["labels"] for m in members], k, 0, coords)
                elif args.mode == "coassoc":  # domains.consensus_mode=coassoc on the same members
                    c = consensus_coassoc([runs[int(m)]["labels"] for m in members], k, 0, coords,
                                          spec.domains.refine_neighbors)
                else:
                    c = consensus_labels([runs[int(m)]["labels"] for m in members])
                aris.append(clustering_scores(truth, c.labels)["ari"])
            a = np.array(aris)
            rows.append({"section": name, "pool": len(seeds), "n": n, "draws": args.draws, "mean": float(a.mean()),
                         "sd": float(a.std(ddof=1)), "single_mean": float(single.mean()), "single_sd": sd1,
                         "sd_ratio": float(a.std(ddof=1)) / sd1})
            r = rows[-1]
            print(f"| {name} | {args.mode} | {n} | {r['mean']:.3f} ± {r['sd']:.3f} | {r['single_mean']:.3f} ± {sd1:.3f} "
                  f"| {r['sd_ratio']:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def pairs(args: argparse.Namespace) -> None:
    """Seed-to-seed ARI of the saved fits (which seeds land on the same solution) and two label-free scores of each
    fit (spatial smoothness of its labels: share of the 6 nearest spots with the same label; silhouette of its
    embedding), with their Spearman correlation to the ARI against the layers."""
    from scipy.spatial import cKDTree
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    from stmm_core.pipeline.run import load_section

    for name in args.sections:
        seeds, runs = _saved_runs(args, name)
        coords = load_section(_section_path(name)).coords
        _, nb = cKDTree(coords).query(coords, k=7)
        ari = np.array([float(runs[s]["ari"]) for s in seeds])
        smooth = np.array([(runs[s]["labels"][nb[:, 1:]] == runs[s]["labels"][:, None]).mean() for s in seeds])
        sil = np.array([silhouette_score(runs[s]["embedding"], runs[s]["labels"], sample_size=1500, random_state=0)
                        for s in seeds])
        print(f"## {name}: seed-to-seed ARI (rows/columns = seeds {seeds[0]}..{seeds[-1]})")
        for a in seeds:
            print(f"seed {a:2d} (ARI {runs[a]['ari']:.3f}) " + " ".join(
                f"{adjusted_rand_score(runs[a]['labels'], runs[b]['labels']):.2f}" for b in seeds))
        print(f"label smoothness vs ARI: Spearman {spearmanr(ari, smooth)[0]:+.2f}; "
              f"embedding silhouette vs ARI: Spearman {spearmanr(ari, sil)[0]:+.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fit", "table", "bootstrap", "pairs"):
        p = sub.add_parser(name)
        p.add_argument("--sections", nargs="+", default=["151675", "151676"])
        p.add_argument("--recipe", default="stereomm-expression")
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="spec override, as `stmm fit --set` (repeatable); fits go to RECIPE@HASH8")
    sub.choices["fit"].add_argument("--seeds", type=int, default=15)
    sub.choices["fit"].add_argument("--seed-start", type=int, default=0)
    sub.choices["fit"].add_argument("--reverse", action="store_true", help="last seed first")
    for name in ("fit", "table", "bootstrap", "pairs"):
        sub.choices[name].add_argument(
            "--shared-genes", action="store_true",
            help="restrict every section to the genes all --sections hold (the genes of a joint fit); fits go to "
                 "RECIPE+shared")
    sub.choices["table"].add_argument("--n", type=int, default=5)
    sub.choices["table"].add_argument("--json", type=Path, default=None)
    sub.choices["table"].add_argument("--plots", type=Path, default=None, help="write confidence maps here")
    sub.choices["table"].add_argument("--plot-set", type=int, default=0, help="the seed set whose map is drawn")
    sub.choices["table"].add_argument("--mode", choices=["vote", "coassoc"], default="vote",
                                      help="how each set is combined (domains.consensus_mode)")
    sub.choices["bootstrap"].add_argument("--sizes", nargs="+", type=int, default=[5, 10, 15, 20])
    sub.choices["bootstrap"].add_argument("--draws", type=int, default=200)
    sub.choices["bootstrap"].add_argument("--draw-seed", type=int, default=0)
    sub.choices["bootstrap"].add_argument("--json", type=Path, default=None)
    sub.choices["bootstrap"].add_argument("--mode", choices=["vote", "embedding", "coassoc"], default="vote",
                                          help="how each drawn set is combined (domains.consensus_mode)")
    args = ap.parse_args()
    {"fit": fit, "table": table, "bootstrap": bootstrap, "pairs": pairs}[args.cmd](args)


if __name__ == "__main__":
    main()
