"""Where do the distinct solutions of a recipe come from: the training seed or the clustering seed?

Reads the single-seed fits saved by ``consensus_dlpfc.py fit`` (labels + embedding per seed) and, offline:

    # 1. clustering seed vs training seed
    .venv/bin/python benchmarks/consensus_diagnose.py source --sections 151676 151675 --work W --cluster-seeds 5
    # 2. ways to combine 5 seeds, over 3 disjoint seed sets (vote on labels vs clustering the members' embeddings)
    .venv/bin/python benchmarks/consensus_diagnose.py combine --sections 151676 151675 --work W --n 5

Step 1 re-clusters each saved embedding with the recipe's own task (GMM) and refinement, once per clustering
seed (``--cluster-seeds`` seeds 1000…), and compares

- *clustering only*: the spread (sd of ARI, pairwise ARI between labellings) over clustering seeds on one fixed
  embedding, averaged over the training seeds;
- *training only*: the spread over training seeds with one fixed clustering seed (1000).

Step 2 forms consensus set s from seeds ``s*n … s*n+n-1`` and compares the combination rules of
:mod:`stmm_core.pipeline.consensus` (``vote``: Hungarian-aligned majority vote of the members' labels;
``embedding``: the recipe's task + refinement on the members' embeddings side by side) with the single seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _runs(work: Path, recipe: str, name: str) -> dict[int, dict]:
    folder = work / recipe / name
    seeds = sorted(int(p.stem[4:]) for p in folder.glob("seed*.npz"))
    return {s: dict(np.load(folder / f"seed{s}.npz", allow_pickle=True)) for s in seeds}


def _spec_and_coords(recipe: str, name: str):
    from stmm_core.pipeline.run import load_section
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    from consensus_dlpfc import _section_path  # type: ignore[import-not-found]

    return parse_spec(get_recipe(recipe)["spec"]), load_section(_section_path(name)).coords


def _k(runs: dict[int, dict]) -> int:
    """K of the saved fits (the number of layers; unlabelled spots are not a class)."""
    return max(len(np.unique(r["labels"])) for r in runs.values())


def _cluster(spec, coords, emb: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """The recipe's task + refinement on *emb* → (labels, the mixture's lower bound, or nan)."""
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.pipeline_base import build_component

    task = build_component(spec, "task")
    labels = np.asarray(task.run(emb, k, seed), dtype=np.int64)
    if spec.domains.refine_neighbors > 1:
        labels = refine_labels(coords, labels, spec.domains.refine_neighbors)
    return labels, float(getattr(task, "last_info", {}).get("lower_bound", np.nan))


def source(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from stmm_core.metrics import clustering_scores

    for name in args.sections:
        runs = _runs(args.work, args.recipe, name)
        spec, coords = _spec_and_coords(args.recipe, name)
        truth = runs[next(iter(runs))]["truth"]
        k = _k(runs)
        cseeds = [1000 + i for i in range(args.cluster_seeds)]
        lab, lb = {}, {}
        for t in runs:
            for c in cseeds:
                lab[(t, c)], lb[(t, c)] = _cluster(spec, coords, runs[t]["embedding"], k, c)
        score = {key: clustering_scores(truth, v)["ari"] for key, v in lab.items()}
        within_sd, within_pair, best = [], [], {}
        for t in runs:
            a = [score[(t, c)] for c in cseeds]
            within_sd.append(np.std(a, ddof=1))
            within_pair += [ari(lab[(t, c1)], lab[(t, c2)]) for i, c1 in enumerate(cseeds) for c2 in cseeds[i + 1:]]
            best[t] = max(cseeds, key=lambda c: lb[(t, c)])
            print(f"{name} train seed {t:2d}: saved ARI {float(runs[t]['ari']):.3f}; clustering seeds (ARI:lower "
                  "bound) " + " ".join(f"{score[(t, c)]:.3f}:{lb[(t, c)]:.4f}" for c in cseeds), flush=True)
        ts = list(runs)
        c0 = cseeds[0]
        across = [score[(t, c0)] for t in ts]
        across_pair = [ari(lab[(t1, c0)], lab[(t2, c0)]) for i, t1 in enumerate(ts) for t2 in ts[i + 1:]]
        top = [score[(t, best[t])] for t in ts]
        top_pair = [ari(lab[(t1, best[t1])], lab[(t2, best[t2])]) for i, t1 in enumerate(ts) for t2 in ts[i + 1:]]
        n_restarts = len(cseeds) * getattr(spec.components["task"], "params", {}).get("n_init", 20)
        print(f"| {name} | clustering seed only (fixed embedding, {len(cseeds)} seeds, mean over {len(ts)} "
              f"embeddings) | sd {np.mean(within_sd):.3f} | pairwise ARI mean {np.mean(within_pair):.2f} / min "
              f"{np.min(within_pair):.2f} |")
        print(f"| {name} | training seed only (clustering seed {c0}, {len(ts)} seeds) | sd {np.std(across, ddof=1):.3f}"
              f" (mean {np.mean(across):.3f}) | pairwise ARI mean {np.mean(across_pair):.2f} / min "
              f"{np.min(across_pair):.2f} |")
        print(f"| {name} | training seed, best likelihood of {len(cseeds)} clustering seeds (~{n_restarts} restarts) "
              f"| sd {np.std(top, ddof=1):.3f} (mean {np.mean(top):.3f}) | pairwise ARI mean {np.mean(top_pair):.2f} "
              f"/ min {np.min(top_pair):.2f} |", flush=True)


def _joint_optima(spec, coords, members: list[dict], k: int, s: int, restarts: int = 40) -> tuple[list, np.ndarray]:
    """Mixture optima on the members' joint embedding (the task's PCA, its covariance): *restarts* EM runs from
    one k-means initialisation each (random_state ``s*1000+c``) and one EM from each member's labels and from
    their vote; each refined as the recipe refines → (labellings, lower bounds)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from stmm_core.pipeline.consensus import consensus_labels
    from stmm_core.pipeline.consensus_embed import joint_embedding
    from stmm_core.pipeline.refine import refine_labels
    from stmm_tasks.gmm_starts import mixture_start

    params = spec.components["task"].params
    cov = params.get("covariance", "tied")
    x = PCA(params.get("pca", 20), random_state=s).fit_transform(
        joint_embedding([m["embedding"] for m in members]).astype(np.float64))
    common = {"n_components": k, "covariance_type": cov, "max_iter": 300, "reg_covar": 1e-6}
    fits = [GaussianMixture(n_init=1, random_state=s * 1000 + c, **common).fit(x) for c in range(restarts)]
    labs = [m["labels"] for m in members]
    for start in labs + [consensus_labels(labs).labels]:
        init = mixture_start(x, start, k, cov)
        if init is not None:
            fits.append(GaussianMixture(n_init=1, random_state=s, **common, **init).fit(x))
    out = [refine_labels(coords, g.predict(x), spec.domains.refine_neighbors) for g in fits]
    return out, np.array([g.lower_bound_ for g in fits])


def _combine(mode: str, spec, coords, members: list[dict], k: int, s: int) -> np.ndarray:
    """One combination rule on one seed set (``s``: the consensus seed).

    ``agree-joint``: among the mixture optima on the joint embedding (40 single restarts + starts from each member
    and the vote), the one with the highest mean ARI to the members; ``coassoc-jointW``: co-association of the
    members (weight W) and those joint optima (1 − W), clustered spectrally; ``embedding-smoothR``: the embedding
    mode on the joint embedding averaged R times over the 7 nearest spots; ``vote``: the members' saved labels voted; ``coassoc``: :func:`consensus_coassoc` (spectral clustering of
    the members' co-association, clustering seed s, then the recipe's refinement); ``embedding``: :func:`consensus_embedding` (the mixture of highest
    likelihood on the joint embedding among the task's restarts and starts from the members' labels and their
    vote; clustering seed s); ``embedding-plain``: the task on the joint embedding with its own restarts only; ``embedding-coassocR``: the joint embedding clustered with R clustering seeds and those R labellings with the
    members' own, by co-association (``coassoc``); ``embedding-voteR``: the joint embedding clustered with R clustering seeds,
    those R labellings voted; ``members-voteR``: every member's own embedding clustered with R clustering seeds,
    the 5·R labellings voted."""
    from stmm_core.pipeline.consensus import consensus_labels
    from stmm_core.pipeline.consensus_embed import consensus_embedding, joint_embedding

    embs = [m["embedding"] for m in members]
    if mode == "vote":
        return consensus_labels([m["labels"] for m in members]).labels
    if mode == "embedding":
        return consensus_embedding(spec, embs, [m["labels"] for m in members], k, s, coords).labels
    if mode == "coassoc":  # domains.consensus_mode=coassoc: spectral clustering of the members' co-association
        from stmm_core.pipeline.consensus_coassoc import consensus_coassoc

        return consensus_coassoc([m["labels"] for m in members], k, s, coords, spec.domains.refine_neighbors).labels
    if mode == "agree-joint":  # the joint-embedding optimum that agrees best (mean ARI) with the members' labels
        from sklearn.metrics import adjusted_rand_score

        cands, _ = _joint_optima(spec, coords, members, k, s)
        score = [np.mean([adjusted_rand_score(c, m["labels"]) for m in members]) for c in cands]
        return cands[int(np.argmax(score))]
    if mode.startswith("coassoc-joint"):  # co-association of the members (share W) and the joint optima (1 - W)
        from sklearn.cluster import KMeans

        from stmm_core.pipeline.consensus_coassoc import coassociation_coordinates
        from stmm_core.pipeline.refine import refine_labels

        w = float(mode[len("coassoc-joint"):])
        cands, _ = _joint_optima(spec, coords, members, k, s)
        # weights through repetition: each member stands for w*len(cands)/((1-w)*len(members)) joint optima
        reps = max(1, int(round(w * len(cands) / ((1 - w) * len(members)))))
        x = coassociation_coordinates(cands + [m["labels"] for m in members] * reps, k)
        lab = KMeans(n_clusters=k, n_init=20, random_state=s).fit_predict(x)
        return refine_labels(coords, lab, spec.domains.refine_neighbors)
    if mode.startswith("embedding-smooth"):  # joint embedding averaged over the 7 nearest spots R times, then as
        from scipy.spatial import cKDTree  # the embedding mode (restarts + member/vote starts, best likelihood)

        from stmm_core.pipeline.consensus import consensus_labels
        from stmm_core.pipeline.consensus_embed import cluster_embedding, joint_embedding

        j = joint_embedding(embs)
        _, nb = cKDTree(coords).query(coords, k=7)
        for _ in range(int(mode[len("embedding-smooth"):])):
            j = j[nb].mean(axis=1)
        labs = [m["labels"] for m in members]
        return cluster_embedding(spec, j, k, s, coords, starts=labs + [consensus_labels(labs).labels])
    if mode == "embedding-plain":  # the task once on the joint embedding, its own restarts only
        return _cluster(spec, coords, joint_embedding(embs), k, s)[0]
    r = int(mode.rsplit("vote", 1)[1] if "vote" in mode else mode.rsplit("coassoc", 1)[1])
    if mode.startswith("embedding-coassoc"):  # the joint embedding clustered with R clustering seeds (the task's
        from stmm_core.pipeline.consensus_coassoc import consensus_coassoc  # own restarts each), + the members

        j = joint_embedding(embs)
        runs = [_cluster(spec, coords, j, k, s * 1000 + i)[0] for i in range(r)]
        return consensus_coassoc(runs + [m["labels"] for m in members], k, s, coords,
                                 spec.domains.refine_neighbors).labels
    if mode.startswith("embedding-vote"):
        j = joint_embedding(embs)
        return consensus_labels([_cluster(spec, coords, j, k, s * 1000 + i)[0] for i in range(r)]).labels
    if mode.startswith("members-vote"):
        return consensus_labels([_cluster(spec, coords, e, k, s * 1000 + i)[0] for e in embs for i in range(r)]).labels
    raise SystemExit(f"unknown mode {mode!r}")


def combine(args: argparse.Namespace) -> None:
    from stmm_core.metrics import clustering_scores

    for name in args.sections:
        runs = _runs(args.work, args.recipe, name)
        spec, coords = _spec_and_coords(args.recipe, name)
        if args.set:  # settings of the combination step only (the members' saved fits stay as they are)
            from stmm_core.cli.compose_cmd import parse_sets

            spec = spec.with_overrides(parse_sets(args.set))
        truth = runs[next(iter(runs))]["truth"]
        k = _k(runs)
        single = np.array([float(r["ari"]) for r in runs.values()])
        out: dict[str, list[float]] = {m: [] for m in args.modes}
        secs: dict[str, list[float]] = {m: [] for m in args.modes}
        for s in range(len(runs) // args.n):
            members = [runs[s * args.n + i] for i in range(args.n)]
            for mode in args.modes:
                t0 = time.perf_counter()
                lab = _combine(mode, spec, coords, members, k, s)
                secs[mode].append(time.perf_counter() - t0)
                out[mode].append(clustering_scores(truth, lab)["ari"])
        sd1 = single.std(ddof=1)
        print(f"## {name}: single seeds ({len(single)}) {single.mean():.3f} ± {sd1:.3f}")
        for mode, v in out.items():
            a = np.array(v)
            print(f"| {name} | {mode} | {' / '.join(f'{x:.3f}' for x in a)} | {a.mean():.3f} ± {a.std(ddof=1):.3f} | "
                  f"{a.std(ddof=1) / sd1:.2f} | {np.mean(secs[mode]):.2f} s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("source", "combine"):
        p = sub.add_parser(name)
        p.add_argument("--sections", nargs="+", default=["151676", "151675"])
        p.add_argument("--recipe", default="stereomm-expression")
        p.add_argument("--work", type=Path, required=True)
    sub.choices["source"].add_argument("--cluster-seeds", type=int, default=5)
    sub.choices["combine"].add_argument("--n", type=int, default=5)
    sub.choices["combine"].add_argument("--set", action="append", default=None,
                                        help="override for the combination step, e.g. task.covariance=full")
    sub.choices["combine"].add_argument("--modes", nargs="+", default=["vote", "embedding"])
    args = ap.parse_args()
    {"source": source, "combine": combine}[args.cmd](args)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
