"""Fourth round on the seed lottery of ``stereomm-expression`` (issue 13 item 1): analyses of saved fits.

Needs the 15 saved single fits of both recipes per section (``consensus_dlpfc.py fit``)::

    W=/path/to/work
    .venv/bin/python benchmarks/consensus_dlpfc.py fit --sections 151675 151676 151510 --seeds 15 --work $W
    .venv/bin/python benchmarks/consensus_dlpfc.py fit --recipe expression-smooth-gmm --sections 151675 151676 151510 --seeds 15 --work $W
    .venv/bin/python benchmarks/consensus_round4.py hcinit   --work $W --sections 151675 151676 151510
    .venv/bin/python benchmarks/consensus_round4.py refstart --work $W --sections 151676 151510 151675
    .venv/bin/python benchmarks/consensus_round4.py anchor   --work $W --sections 151676 151510 151675
    .venv/bin/python benchmarks/consensus_round4.py depth    --work $W --sections 151675 151676 151510 --seeds 3 0
    .venv/bin/python benchmarks/consensus_round4.py posthoc  --work $W --sections 151676 151510 151675

* ``hcinit``: every saved embedding re-clustered by the recipe's mixture (PCA 20 → tied GMM) started from a
  hierarchical (Ward) partition of mclust's "SVD" transform of the data (mclust's default ``hcUse``; mclust
  itself agglomerates with its VVV criterion, not reproduced here) instead of 20 k-means restarts; per seed and
  for the joint embedding of 5 seeds (3 disjoint sets).
* ``refstart``: EM on each embedding (and on each set's joint embedding) started from the labels of the
  training-free ``expression-smooth-gmm`` fit (seed 0 for single seeds, seed s for set s).
* ``anchor``: label-level consensus rules that use the training-free fit as an anchor (seed s for set s; seed 0
  for 50 bootstrap draws of 5 seeds).
* ``depth``: how the recipe's gene features carry sequencing depth (|correlation| of each PC with log library
  size), the median library size of every domain of the given seeds, and the training-free baseline on features
  with log library size regressed out, or on scanpy's analytic Pearson residuals, against its own features.
* ``posthoc``: the saved embeddings with log library size regressed out after training, then clustered.

Fifth round (the same saved-fit layout; ``--set 'graph.decoder_covariates=["log_library"]'`` fits go to
``stereomm-expression@HASH8``)::

    .venv/bin/python benchmarks/consensus_round4.py embdepth   --work $W --sections 151676 151510
    .venv/bin/python benchmarks/consensus_round4.py localdepth --work $W --sections 151510 151676
    .venv/bin/python benchmarks/consensus_round4.py families   --work $W --sections 151675 151676 151510

* ``embdepth``: for every saved-fit folder of the recipe (``RECIPE`` and ``RECIPE@HASH8``), how much of the log
  library size a linear map of each saved embedding explains (R²), beside the fit's ARI.
* ``families``: the seeds' solution families (average linkage on 1 − pairwise ARI, cut at ``--cut``), each
  family's size, ARI and the ARI of the vote of its members; then, for every 5-seed set drawable from the
  saved seeds (all C(15, 5) = 3003), which family holds the plurality, and what a rule that always returned the
  vote of the *plurality* family or of the *best* family present (an oracle) would score: mean and sd over sets.
* ``localdepth``: the training-free baseline on features with only the *local* part of depth regressed out (log
  library minus its mean over 1, 3 or 8 hops of the graph), against no removal and the total.

All rules: the recipe's refinement (7 neighbours) after clustering; sd ratio = spread / single-seed spread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RECIPE, BASELINE = "stereomm-expression", "expression-smooth-gmm"
#: The rounds these analyses belong to (fourth, fifth) used the recipes before the sixth round's switch to Seurat v3
#: HVGs; their saved fits live in ``RECIPE@770f3e08`` and ``BASELINE@e30e979e`` (``consensus_dlpfc.py fit --set
#: gene.flavor=seurat``), and the baseline computed here uses that spec too.
OLD_SPEC = {"gene.flavor": "seurat"}
RECIPE_FITS, BASELINE_FITS = "stereomm-expression@770f3e08", "expression-smooth-gmm@e30e979e"


def _load(work: Path, recipe: str, section: str) -> dict[int, dict]:
    folder = work / recipe / section
    return {int(p.stem[4:]): dict(np.load(p, allow_pickle=True)) for p in sorted(folder.glob("seed*.npz"))}


def _coords(section: str) -> np.ndarray:
    from consensus_dlpfc import _section_path
    from stmm_core.pipeline.run import load_section

    return load_section(_section_path(section)).coords


def _joint(embeddings: list[np.ndarray]) -> np.ndarray:
    """Members side by side, each centred and scaled to unit mean squared row norm."""
    parts = []
    for e in embeddings:
        e = e.astype(np.float64) - e.mean(0)
        parts.append(e / np.sqrt((e ** 2).sum(1).mean()))
    return np.concatenate(parts, 1)


def _mixture(emb: np.ndarray, k: int, seed: int, start: np.ndarray | str | None) -> np.ndarray:
    """The recipe's mixture (PCA 20 → tied GMM): k-means restarts (None), a Ward start ("svd"), or a labelling."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from stmm_tasks.gmm_starts import mixture_start

    x = PCA(20, random_state=seed).fit_transform(emb.astype(np.float64))
    common = dict(n_components=k, covariance_type="tied", reg_covar=1e-6, max_iter=300, random_state=seed)
    if start is None:
        return GaussianMixture(n_init=20, **common).fit(x).predict(x)
    if isinstance(start, str):  # mclust's hcUse = "SVD": standardise, rotate, scale by 1/sqrt(singular values)
        z = (x - x.mean(0)) / x.std(0, ddof=1)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        start = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(z @ vt.T / np.sqrt(s))
    return GaussianMixture(n_init=1, **common, **mixture_start(x, start, k, "tied")).fit(x).predict(x)


def _line(name: str, single: np.ndarray, sets: np.ndarray, saved_sd: float) -> str:
    return (f"| {name} | {single.mean():.3f} ± {single.std(ddof=1):.3f} | {' / '.join(f'{v:.3f}' for v in sets)} = "
            f"{sets.mean():.3f} ± {sets.std(ddof=1):.3f} | {sets.std(ddof=1) / saved_sd:.2f} |")


def hcinit(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.refine import refine_labels

    for sec in args.sections:
        runs, coords = _load(args.work, RECIPE_FITS, sec), _coords(sec)
        truth, k = runs[0]["truth"], len(np.unique(runs[0]["labels"]))
        saved = np.array([float(r["ari"]) for r in runs.values()])
        print(f"## {sec}: saved single seeds {saved.mean():.3f} ± {saved.std(ddof=1):.3f}")
        print("| start | single seeds (clustering seed 1000) | joint 5-seed sets | sd ratio vs saved |")
        for name, start in (("20 k-means restarts", None), ("Ward on mclust's SVD transform", "svd")):
            single = np.array([ari(truth, refine_labels(coords, _mixture(r["embedding"], k, 1000, start), 7))
                               for r in runs.values()])
            sets = np.array([ari(truth, refine_labels(coords, _mixture(
                _joint([runs[m]["embedding"] for m in range(5 * j, 5 * j + 5)]), k, j, start), 7)) for j in range(3)])
            print(_line(name, single, sets, saved.std(ddof=1)), flush=True)


def refstart(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.refine import refine_labels

    for sec in args.sections:
        runs, base, coords = _load(args.work, RECIPE_FITS, sec), _load(args.work, BASELINE_FITS, sec), _coords(sec)
        truth, k = runs[0]["truth"], len(np.unique(runs[0]["labels"]))
        saved = np.array([float(r["ari"]) for r in runs.values()])
        single = np.array([ari(truth, refine_labels(coords, _mixture(r["embedding"], k, 0, base[0]["labels"]), 7))
                           for r in runs.values()])
        sets = np.array([ari(truth, refine_labels(coords, _mixture(
            _joint([runs[m]["embedding"] for m in range(5 * j, 5 * j + 5)]), k, j, base[j]["labels"]), 7))
            for j in range(3)])
        starts = " / ".join(f"{float(base[j]['ari']):.3f}" for j in range(3))
        print(f"## {sec}: saved single seeds {saved.mean():.3f} ± {saved.std(ddof=1):.3f}; the starts "
              f"(training-free fits, seeds 0/1/2): {starts}")
        print(_line("EM from the training-free labels", single, sets, saved.std(ddof=1)), flush=True)


def anchor(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.consensus import consensus_labels
    from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

    for sec in args.sections:
        runs, base, coords = _load(args.work, RECIPE_FITS, sec), _load(args.work, BASELINE_FITS, sec), _coords(sec)
        truth, k = runs[0]["truth"], len(np.unique(runs[0]["labels"]))
        single = np.array([float(r["ari"]) for r in runs.values()])

        def rules(members: list[int], s: int) -> dict[str, np.ndarray]:
            labs, ref = [runs[m]["labels"] for m in members], base[s]["labels"]
            sims = np.array([ari(ref, lab) for lab in labs])
            return {"the member closest to the anchor": labs[int(np.argmax(sims))],
                    "vote of the 3 members closest to the anchor": consensus_labels(
                        [labs[i] for i in np.argsort(-sims)[:3]]).labels,
                    "co-association of the 5 members + the anchor": consensus_coassoc(labs + [ref], k, s, coords, 7).labels}

        sets: dict[str, list[float]] = {}
        boot: dict[str, list[float]] = {}
        for s in range(3):
            for name, lab in rules(list(range(5 * s, 5 * s + 5)), s).items():
                sets.setdefault(name, []).append(ari(truth, lab))
        rng = np.random.default_rng(0)
        for _ in range(50):
            for name, lab in rules([int(m) for m in rng.choice(15, size=5, replace=True)], 0).items():
                boot.setdefault(name, []).append(ari(truth, lab))
        sd = single.std(ddof=1)
        print(f"## {sec}: single seeds {single.mean():.3f} ± {sd:.3f}")
        print("| rule | sets 0 / 1 / 2 = mean ± sd (ratio) | bootstrap mean ± sd (ratio) |")
        for name in sets:
            a, b = np.array(sets[name]), np.array(boot[name])
            print(f"| {name} | {' / '.join(f'{v:.3f}' for v in a)} = {a.mean():.3f} ± {a.std(ddof=1):.3f} "
                  f"({a.std(ddof=1) / sd:.2f}) | {b.mean():.3f} ± {b.std(ddof=1):.3f} ({b.std(ddof=1) / sd:.2f}) |",
                  flush=True)


def _baseline_inputs(sec: str) -> dict:
    """The training-free baseline's ingredients on one section: spec, section, K, truth, log library, features."""
    from consensus_dlpfc import _label_column, _section_path
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.pipeline_base import build_component
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec
    from stmm_genes.hvg import _counts

    spec = parse_spec(get_recipe(BASELINE)["spec"]).with_overrides(OLD_SPEC)
    section = load_section(_section_path(sec))
    col = _label_column(sec)
    counts = _counts(section)
    return {"spec": spec, "section": section, "k": resolve_n_domains(section, None, col),
            "truth": section.obs[col].to_numpy(), "counts": counts,
            "lib": np.log(np.asarray(counts.sum(1)).ravel()),
            "x": np.asarray(build_component(spec, "gene").fit(section).transform(section), dtype=np.float64),
            "graph": build_component(spec, "builder").build(section.coords)}


def _baseline_aris(inp: dict, feats: np.ndarray, seeds: int) -> list[float]:
    """The baseline's graph model, mixture (clustering seeds 0…seeds-1) and refinement on ``feats``: the ARIs."""
    import torch

    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.pipeline_base import build_component
    from stmm_graph.layers import graph_context

    spec, section = inp["spec"], inp["section"]
    model = build_component(spec, "graph")
    model.setup(feats.shape[1], feats.shape[1], len(feats))
    ctx = graph_context(inp["graph"], adj=False)
    emb = model(torch.from_numpy(np.asarray(feats, dtype=np.float32)), ctx).clustered().numpy()
    task = build_component(spec, "task")
    return [clustering_scores(inp["truth"], refine_labels(section.coords, task.run(emb, inp["k"], s), 7))["ari"]
            for s in range(seeds)]


def depth(args: argparse.Namespace) -> None:
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    for sec in args.sections:
        inp = _baseline_inputs(sec)
        counts, lib, x = inp["counts"], inp["lib"], inp["x"]
        corr = sorted((abs(np.corrcoef(x[:, i], lib)[0, 1]) for i in range(x.shape[1])), reverse=True)
        print(f"## {sec}: median library size {np.exp(np.median(lib)):.0f}; |corr(PC, log library)|, largest 3: "
              f"{' '.join(f'{c:.2f}' for c in corr[:3])}")
        runs = _load(args.work, RECIPE_FITS, sec)
        for s in args.seeds:
            lab = runs[s]["labels"]
            print(f"seed {s} (ARI {float(runs[s]['ari']):.3f}), per domain: spots, median library, top layers: " + "; ".join(
                f"{int((lab == d).sum())}, {np.exp(np.median(lib[lab == d])):.0f}, "
                + ",".join(f"{t} {n}" for t, n in zip(*np.unique(runs[s]['truth'][lab == d], return_counts=True)) if n >= 30)
                for d in range(lab.max() + 1)))
        design = np.stack([np.ones_like(lib), lib], 1)
        adata = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
        sc.experimental.pp.highly_variable_genes(adata, flavor="pearson_residuals", n_top_genes=min(3000, adata.n_vars))
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
        sc.experimental.pp.normalize_pearson_residuals(adata)
        sc.pp.pca(adata, n_comps=30, random_state=0)
        for name, feats in (("recipe's features", x),
                            ("log library regressed out", x - design @ np.linalg.lstsq(design, x, rcond=None)[0]),
                            ("analytic Pearson residuals (scanpy)", adata.obsm["X_pca"])):
            a = _baseline_aris(inp, feats, 4)
            print(f"| {sec} | {BASELINE} on {name} | {np.mean(a):.3f} ± {np.std(a, ddof=1):.3f} (clustering seeds 0-3) |",
                  flush=True)


def posthoc(args: argparse.Namespace) -> None:
    """Every saved embedding with its fit on [1, log library size] removed, then the recipe's mixture (clustering
    seed = the training seed) and refinement: depth taken out after training instead of before."""
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.refine import refine_labels
    from stmm_genes.hvg import _counts, _regress_out_depth

    from consensus_dlpfc import _section_path
    from stmm_core.pipeline.run import load_section

    for sec in args.sections:
        section = load_section(_section_path(sec))
        library = np.asarray(_counts(section).sum(1)).ravel()
        runs = _load(args.work, RECIPE_FITS, sec)
        truth, k = runs[0]["truth"], len(np.unique(runs[0]["labels"]))
        a = np.array([ari(truth, refine_labels(section.coords, _mixture(
            _regress_out_depth(r["embedding"], library), k, s, None), 7)) for s, r in runs.items()])
        saved = np.array([float(r["ari"]) for r in runs.values()])
        print(f"| {sec} | {saved.mean():.3f} ± {saved.std(ddof=1):.3f} | {a.mean():.3f} ± {a.std(ddof=1):.3f} "
              f"({a.min():.3f}–{a.max():.3f}) |", flush=True)


def embdepth(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LinearRegression

    from consensus_dlpfc import _section_path
    from stmm_core.pipeline.run import load_section
    from stmm_genes.hvg import _counts

    for sec in args.sections:
        loglib = np.log1p(np.asarray(_counts(load_section(_section_path(sec))).sum(1)).ravel())
        for folder in sorted(args.work.glob(f"{RECIPE}*/{sec}")):
            runs = _load(args.work, folder.parent.name, sec)
            if not runs:
                continue
            r2 = np.array([LinearRegression().fit(r["embedding"], loglib).score(r["embedding"], loglib)
                           for r in runs.values()])
            aris = " ".join(f"{s}:{float(r['ari']):.3f}" for s, r in sorted(runs.items()))
            print(f"| {sec} | {folder.parent.name} | {len(runs)} | R² {r2.mean():.2f} ± {r2.std():.2f} | {aris} |",
                  flush=True)


def localdepth(args: argparse.Namespace) -> None:
    import scipy.sparse as sp

    for sec in args.sections:
        inp = _baseline_inputs(sec)
        lib, x, ei = inp["lib"], inp["x"], inp["graph"].edge_index
        n = len(lib)
        adj = sp.csr_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n)) + sp.eye(n)
        mean_op = sp.diags(1.0 / np.asarray(adj.sum(1)).ravel()) @ adj  # row-normalised (A + I)
        variants: list[tuple[str, np.ndarray | None]] = [("none", None), ("total log library", lib)]
        for hops in (1, 3, 8):
            smooth = lib
            for _ in range(hops):
                smooth = mean_op @ smooth
            variants.append((f"local: log library minus its {hops}-hop mean", lib - smooth))
        for name, cov in variants:
            feats = x
            if cov is not None:
                design = np.stack([np.ones_like(cov), cov], 1)
                feats = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
            a = _baseline_aris(inp, feats, 3)
            print(f"| {sec} | {name} | {np.mean(a):.3f} ± {np.std(a, ddof=1):.3f} (clustering seeds 0-2) |", flush=True)


def families(args: argparse.Namespace) -> None:
    from itertools import combinations

    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.pipeline.consensus import consensus_labels

    for sec in args.sections:
        runs = _load(args.work, args.folder or RECIPE_FITS, sec)
        seeds = sorted(runs)
        truth = runs[seeds[0]]["truth"]
        lab = {s: runs[s]["labels"] for s in seeds}
        score = {s: float(runs[s]["ari"]) for s in seeds}
        d = np.array([[0.0 if a == b else 1.0 - ari(lab[a], lab[b]) for b in seeds] for a in seeds])
        fam_of = dict(zip(seeds, fcluster(linkage(squareform(d, checks=False), "average"), t=1.0 - args.cut,
                                          criterion="distance")))
        fams = sorted(set(fam_of.values()), key=lambda f: -np.mean([score[s] for s in seeds if fam_of[s] == f]))
        vote = {}
        print(f"## {sec}: {len(seeds)} seeds, single ARI {np.mean(list(score.values())):.3f} ± "
              f"{np.std(list(score.values()), ddof=1):.3f}; families (pairwise ARI cut {args.cut}), best first:")
        for i, f in enumerate(fams):
            members = [s for s in seeds if fam_of[s] == f]
            vote[f] = ari(truth, consensus_labels([lab[s] for s in members]).labels)
            print(f"| {sec} | family {i} | seeds {members} | {len(members)} | ARI {np.mean([score[s] for s in members]):.3f} "
                  f"| vote of its members {vote[f]:.3f} |")
        plural, oracle, has_best = [], [], 0
        for subset in combinations(seeds, 5):
            count = {f: sum(fam_of[s] == f for s in subset) for f in fams}
            top = max(count.values())
            # plurality family; ties go to the family whose members' mean ARI is lower (the pessimistic reading)
            tied = [f for f in fams if count[f] == top]
            plural.append(vote[tied[-1]])
            present = [f for f in fams if count[f] > 0]
            oracle.append(vote[present[0]])
            has_best += count[fams[0]] > 0
        sd = np.std(list(score.values()), ddof=1)
        p, o = np.array(plural), np.array(oracle)
        print(f"| {sec} | all {len(plural)} 5-seed sets | plurality family's vote {p.mean():.3f} ± {p.std():.3f} "
              f"(ratio {p.std() / sd:.2f}) | best family present (oracle) {o.mean():.3f} ± {o.std():.3f} "
              f"(ratio {o.std() / sd:.2f}) | sets holding a seed of the best family {has_best / len(plural):.2f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("hcinit", "refstart", "anchor", "depth", "posthoc", "embdepth", "localdepth", "families"):
        p = sub.add_parser(name)
        p.add_argument("--sections", nargs="+", default=["151676", "151510", "151675"])
        p.add_argument("--work", type=Path, required=True)
    sub.choices["depth"].add_argument("--seeds", nargs="+", type=int, default=[3, 0])
    sub.choices["families"].add_argument("--cut", type=float, default=0.8,
                                         help="seeds with average pairwise ARI above this form one family")
    sub.choices["families"].add_argument("--folder", default=None,
                                         help="saved-fit folder under --work, e.g. stereomm-expression@cb2aa28a "
                                         "for the current recipe (default: the fourth round's fits, " + RECIPE_FITS + ")")
    args = ap.parse_args()
    {"hcinit": hcinit, "refstart": refstart, "anchor": anchor, "depth": depth, "posthoc": posthoc,
     "embdepth": embdepth, "localdepth": localdepth, "families": families}[args.cmd](args)


if __name__ == "__main__":
    main()
