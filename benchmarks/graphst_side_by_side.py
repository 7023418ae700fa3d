"""The `graphst` recipe beside the GraphST package on DLPFC, reusing saved fits (each fit is saved once).

    # 1. fit (resumable: one .npz per method/section/seed; the package's 600 CPU epochs take ~18 min a fit)
    .venv/bin/python benchmarks/graphst_side_by_side.py fit --method package --sections 151675 --seeds 0 --work W
    .venv/bin/python benchmarks/graphst_side_by_side.py fit --method recipe --sections 151675 151676 --seeds 0 1 2 --work W
    # 2. cluster every saved embedding the same way (stmm's gmm task + each method's own refinement) and print
    .venv/bin/python benchmarks/graphst_side_by_side.py table --work W

``--method package`` runs GraphST 1.1.1 exactly as ``stmm benchmark domains -p graphst-package`` does
(:func:`stmm_peers.graphst_pkg.cluster_domains`) and also saves the package's ``obsm["emb"]``; ``--method recipe``
runs the ``graphst`` recipe (or ``--recipe NAME``, plus ``--set key=value`` overrides) through the same fit as
``stmm fit`` / the domains suite; its folder is ``RECIPE@HASH`` (the first 8 hex digits of the spec hash). The saved embeddings let the table re-cluster both with one clustering.
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
    return "graphst-package" + ("-sparse" if args.sparse else "")


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
    tag = _tag(args) if args.method == "package" else f"{args.recipe}@{base.hash()[:8]}"
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
                labels, emb, raw = _fit_package(section, k, seed, base, args.sparse)
            else:
                from stmm_graph_fusion.fit import fit_graph_fusion

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


def _fit_package(section, k: int, seed: int, spec, sparse: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        labels, details = graphst_pkg.cluster_domains(section, n_domains=k, seed=seed, task=task, sparse_adj=sparse)
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


def graphst_refine(coords: np.ndarray, labels: np.ndarray, radius: int = 50) -> np.ndarray:
    """GraphST's ``refine_label``: majority of the ``radius`` nearest *other* spots (ties: the nearer label)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(coords).query(coords, k=radius + 1)
    lab = labels[idx[:, 1:]]
    n_lab = int(labels.max()) + 1
    votes = np.zeros((len(labels), n_lab))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), radius), lab.ravel()), 1.0)
    # max(neigh_type, key=neigh_type.count): among the most frequent, the one met first (nearest)
    first = np.full((len(labels), n_lab), radius, dtype=float)
    for j in range(radius - 1, -1, -1):
        first[np.arange(len(labels)), lab[:, j]] = j
    return np.argmax(votes - first / (radius + 1.0), axis=1)


def ward_gmm(x: np.ndarray, k: int, seed: int, whiten: bool) -> np.ndarray:
    """Tied GMM started from a Ward hierarchical partition of PCA-20 (mclust starts EM from hierarchical
    agglomeration, not k-means); ``whiten`` scales the PCs to unit variance first (mclust's ``hcUse="SVD"``)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    z = PCA(n_components=20, random_state=seed).fit_transform(x.astype(np.float64))
    zh = z / z.std(0) if whiten else z
    init = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(zh)
    means = np.stack([z[init == c].mean(0) for c in range(k)])
    resid = z - means[init]
    cov = resid.T @ resid / len(z) + 1e-6 * np.eye(z.shape[1])
    gmm = GaussianMixture(k, covariance_type="tied", means_init=means, precisions_init=np.linalg.inv(cov),
                          weights_init=np.bincount(init, minlength=k) / len(z), max_iter=300, random_state=seed)
    return gmm.fit(z).predict(z)


def variants(args: argparse.Namespace) -> None:
    """Re-cluster every saved embedding with the clustering/refinement variants (no refit)."""
    from stmm_core.metrics import clustering_scores, labelled_mask
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.plugins import get_catalogue

    from stmm_core.pipeline.run import load_section

    gmm = get_catalogue().get("task", "gmm").build({})
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    coords: dict[str, np.ndarray] = {}
    for folder in sorted(p for w in [args.work, *args.extra] for p in w.glob("*/*") if p.is_dir()):
        if folder.name not in coords:
            coords[folder.name] = np.asarray(load_section(_section_path(folder.name)).coords)
        for path in sorted(folder.glob("seed*.npz"), key=lambda p: int(p.stem[4:])):
            run = np.load(path, allow_pickle=True)
            seed, truth, emb = int(path.stem[4:]), run["truth"], run["embedding"]
            xy = run["coords"] if "coords" in run.files else coords[folder.name]
            k = len(set(truth[labelled_mask(truth)]))
            ari = lambda lab: clustering_scores(truth, lab)["ari"]  # noqa: E731
            raw = gmm.run(emb, k, seed)
            row = {"saved": float(run["ari"]), "gmm": ari(raw), "gmm+stmm51": ari(refine_labels(xy, raw, 51)),
                   "gmm+graphst50": ari(graphst_refine(xy, raw))}
            for whiten in (False, True):
                w = ward_gmm(emb, k, seed, whiten)
                tag = "wardw" if whiten else "ward"
                row[f"{tag}"] = ari(w)
                row[f"{tag}+graphst50"] = ari(graphst_refine(xy, w))
            out.setdefault((folder.parent.name, folder.name), []).append(row)
            print(folder.parent.name, folder.name, seed, {k2: round(v, 3) for k2, v in row.items()}, flush=True)
    cols = list(next(iter(out.values()))[0])
    print("\n| method | section | n | " + " | ".join(cols) + " |\n|---|---|---|" + "---|" * len(cols))
    for (m, s_), rows in sorted(out.items()):
        print(f"| {m} | {s_} | {len(rows)} | " + " | ".join(f"{np.mean([r[c] for r in rows]):.3f}" for c in cols) + " |")


def mirror_fit(section, seed: int, spec, features: str = "package") -> tuple[np.ndarray, bool]:
    """The recipe's components and training step fed the package's inputs and random draws → (embedding, same graph).

    The package itself is set up (``GraphST.GraphST(adata, random_seed=seed)``: its seeding, HVG, features and the
    one permutation it draws there), then its ``Encoder`` is built as its ``train()`` builds it (the same torch
    draws) and its weights are copied into the recipe's ``ContrastiveGAE``; every epoch draws the package's
    ``np.random.permutation`` for the negatives (``GraphContext.negatives``). The graph is the recipe's builder
    (compared with the package's ``adj``), the features the package's (``features="package"``) or the recipe's own
    gene encoder (``"recipe"``: its own seurat_v3 HVG). What is left from the package's fit of that seed is the
    float summation order (the recipe's sparse CSR products vs the package's matrix) and, with ``"recipe"``, the
    genes the two HVG selections disagree on. This aligns random streams, which the recipe does not do (its seeds
    are its own): a diagnostic, not a setting of the recipe.
    """
    import torch
    from GraphST import GraphST
    from GraphST.model import Encoder

    from stmm_core.interfaces import GraphContext
    from stmm_core.pipeline_base import build_component
    from stmm_peers.common import quiet, section_anndata

    threads = torch.get_num_threads()
    with quiet():
        pkg = GraphST.GraphST(section_anndata(section), epochs=spec.train.epochs, random_seed=seed)
    torch.set_num_threads(threads)  # the package's preprocessing resets torch's thread count
    if features == "package":
        x = pkg.features
    else:
        x = torch.from_numpy(np.asarray(build_component(spec, "gene").fit_transform(section), np.float32))
    enc = Encoder(pkg.dim_input, pkg.dim_output, pkg.graph_neigh)  # the draws of the package's train()
    graph = build_component(spec, "builder").build(section.coords, section.spot_diameter)
    adj = np.zeros((section.n_spots, section.n_spots), dtype=bool)
    adj[graph.edge_index[0], graph.edge_index[1]] = True
    same_graph = bool(np.array_equal(adj, pkg.adata.obsm["adj"] > 0))
    fusion, model = build_component(spec, "fusion"), build_component(spec, "graph")
    fusion.setup(None, x.shape[1])
    model.setup(fusion.out_dim, x.shape[1], section.n_spots)
    with torch.no_grad():
        model.encoder.weight.copy_(enc.weight1)
        model.decoder.weight.copy_(enc.weight2)
        model.discriminator.weight.copy_(enc.disc.f_k.weight)
        model.discriminator.bias.copy_(enc.disc.f_k.bias)
    ctx = GraphContext(edge_index=graph.torch_edge_index(), n_nodes=section.n_spots,
                       distances=torch.as_tensor(graph.distances),
                       rank=None if graph.rank is None else torch.as_tensor(graph.rank))
    params = [p for p in list(fusion.parameters()) + list(model.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.train.lr, weight_decay=spec.train.weight_decay)
    for _ in range(spec.train.epochs):
        fusion.train()
        model.train()
        opt.zero_grad(set_to_none=True)
        xin = fusion(None, x, ctx)
        ctx.negatives = xin[torch.from_numpy(np.random.permutation(section.n_spots))].detach()
        model.loss(model(xin, ctx), x)["loss"].backward()
        opt.step()
    ctx.negatives = None
    fusion.eval()
    return model.embed(fusion(None, x, ctx), ctx).numpy().astype(np.float32), same_graph


def mirror(args: argparse.Namespace) -> None:
    """Fit :func:`mirror_fit` per seed, cluster and refine it as the recipe does, compare with the package's fit."""
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.pipeline.run import load_section, resolve_n_domains
    from stmm_core.pipeline_base import build_component
    from stmm_core.recipes import get_recipe
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec

    configure_threads()
    base = parse_spec(get_recipe(args.recipe)["spec"])
    tag = f"mirror-{args.features}-{args.recipe}@{base.hash()[:8]}" + (f"-e{args.epochs}" if args.epochs != 600 else "")
    for seed in args.seeds:
        for name in args.sections:
            out = args.work / tag / name / f"seed{seed}.npz"
            if out.exists():
                continue
            section = load_section(_section_path(name))
            k = resolve_n_domains(section, None, "layer")
            truth = section.obs["layer"].astype(str).to_numpy()
            spec = base.with_overrides({"train.seed": seed, "train.epochs": args.epochs})
            t0 = time.perf_counter()
            emb, same_graph = mirror_fit(section, seed, spec, args.features)
            sec = time.perf_counter() - t0
            raw = np.asarray(build_component(spec, "task").run(emb, k, seed), dtype=np.int64)
            labels = refine_labels(section.coords, raw, spec.domains.refine_neighbors)
            ari = clustering_scores(truth, labels)["ari"]
            row = {"method": tag, "section": name, "seed": seed, "same_graph": same_graph, "ari": round(ari, 4),
                   "ari_graphst_refine": round(clustering_scores(truth, graphst_refine(section.coords, raw))["ari"], 4),
                   "ari_before_refine": round(clustering_scores(truth, raw)["ari"], 4), "seconds": round(sec)}
            ref = args.work / "graphst-package-sparse" / name / f"seed{seed}.npz"
            if ref.exists() and args.epochs == 600:
                pk = np.load(ref, allow_pickle=True)
                pe = pk["embedding"]
                row["package_ari"] = round(float(pk["ari"]), 4)
                row["package_ari_before_refine"] = round(clustering_scores(truth, pk["raw"])["ari"], 4)
                row["emb_max_abs_diff"] = float(np.abs(emb - pe).max())
                row["emb_rel_diff"] = float(np.linalg.norm(emb - pe) / np.linalg.norm(pe))
                row["labels_ari_vs_package"] = round(clustering_scores(pk["raw"].astype(str), raw)["ari"], 4)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, labels=labels, raw=raw, embedding=emb, seconds=sec, ari=ari, truth=truth,
                                coords=np.asarray(section.coords), row=json.dumps(row))
            tmp.replace(out)
            print(json.dumps(row), flush=True)


def drift(args: argparse.Namespace) -> None:
    """How far the mirrored recipe and the package (sparse matrix) drift apart with the number of epochs."""
    import torch
    from GraphST import GraphST

    from stmm_core.pipeline.run import load_section
    from stmm_core.recipes import get_recipe
    from stmm_core.seeding import configure_threads
    from stmm_core.spec import parse_spec
    from stmm_peers.common import quiet, section_anndata

    configure_threads()
    section = load_section(_section_path(args.section))
    for epochs in args.epochs:
        spec = parse_spec(get_recipe(args.recipe)["spec"]).with_overrides({"train.seed": args.seed,
                                                                           "train.epochs": epochs})
        threads = torch.get_num_threads()
        with quiet():
            model = GraphST.GraphST(section_anndata(section), epochs=epochs, random_seed=args.seed)
        torch.set_num_threads(threads)
        with quiet():
            if args.package_matrix == "sparse":
                model.adj = model.adj.to_sparse()
            pe = np.asarray(model.train().obsm["emb"])
        emb, same = mirror_fit(section, args.seed, spec, "package")
        print(json.dumps({"section": args.section, "seed": args.seed, "epochs": epochs, "same_graph": same,
                          "package_matrix": args.package_matrix, "emb_max_abs_diff": float(np.abs(emb - pe).max()),
                          "emb_rel_diff": float(np.linalg.norm(emb - pe) / np.linalg.norm(pe)),
                          "torch_threads": torch.get_num_threads()}), flush=True)


def reclusters(args: argparse.Namespace) -> None:
    """Cluster every saved embedding of ``--section`` with the gmm task at several seeds (no refit).

    The clustering is one more random step (20 k-means-started EM fits, the best likelihood kept): on two
    embeddings that differ by float rounding it can land in different optima. Each fit's ARI is shown at the
    clustering seeds given, each refined as its method refines (package: GraphST's ``refine_label``; recipe:
    ``refine_neighbors`` 51), with the mean over clustering seeds per fit and per method.
    """
    from stmm_core.metrics import clustering_scores
    from stmm_core.pipeline.refine import refine_labels
    from stmm_core.plugins import get_catalogue

    gmm = get_catalogue().get("task", "gmm").build({})
    per_method: dict[str, list[float]] = {}
    for folder in sorted(p for p in args.work.glob(f"*/{args.section}") if p.is_dir()):
        method = folder.parent.name
        for path in sorted(folder.glob("seed*.npz"), key=lambda p: int(p.stem[4:])):
            run = np.load(path, allow_pickle=True)
            truth, emb, xy = run["truth"], run["embedding"], run["coords"]
            scores = []
            for s in args.gmm_seeds:
                raw = gmm.run(emb, args.k, s)
                lab = graphst_refine(xy, raw) if method.startswith("graphst-package") else refine_labels(xy, raw, 51)
                scores.append(round(clustering_scores(truth, lab)["ari"], 3))
            per_method.setdefault(method, []).append(float(np.mean(scores)))
            print(json.dumps({"method": method, "section": args.section, "fit_seed": int(path.stem[4:]),
                              "gmm_seeds": args.gmm_seeds, "ari": scores, "mean": round(float(np.mean(scores)), 3)}),
                  flush=True)
    print(f"\n| method | {args.section}: fits | mean over clustering seeds, per fit | mean ± sd |\n|---|---|---|---|")
    for m, v in sorted(per_method.items()):
        print(f"| {m} | {len(v)} | {' / '.join(f'{x:.3f}' for x in v)} | {np.mean(v):.3f} ± "
              f"{np.std(v, ddof=1) if len(v) > 1 else 0:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--method", choices=["package", "recipe"], required=True)
    f.add_argument("--recipe", default="graphst")
    f.add_argument("--sparse", action="store_true", help="package: its propagation matrix as a torch sparse tensor")
    f.add_argument("--set", action="append", default=[], help="spec override key=value (recipe only)")
    f.add_argument("--sections", nargs="+", default=["151675", "151676"])
    f.add_argument("--seeds", nargs="+", type=int, default=[0])
    f.add_argument("--work", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--work", type=Path, required=True)
    v = sub.add_parser("variants")
    v.add_argument("--work", type=Path, required=True)
    v.add_argument("--extra", type=Path, nargs="*", default=[], help="more folders of METHOD/SECTION/seedS.npz")
    m = sub.add_parser("mirror", help="diagnostic: the recipe's training on the package's inputs and draws")
    m.add_argument("--recipe", default="graphst")
    m.add_argument("--features", choices=["package", "recipe"], default="package")
    m.add_argument("--epochs", type=int, default=600)
    m.add_argument("--sections", nargs="+", default=["151676"])
    m.add_argument("--seeds", nargs="+", type=int, default=[1])
    m.add_argument("--work", type=Path, required=True)
    d = sub.add_parser("drift", help="diagnostic: mirrored recipe vs package embeddings after N epochs")
    d.add_argument("--recipe", default="graphst")
    d.add_argument("--section", default="151676")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--epochs", nargs="+", type=int, default=[10, 60])
    d.add_argument("--package-matrix", choices=["sparse", "dense"], default="sparse")
    r = sub.add_parser("reclusters", help="every saved embedding of a section clustered at several gmm seeds")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--section", default="151676")
    r.add_argument("--k", type=int, default=7)
    r.add_argument("--gmm-seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    args = ap.parse_args()
    {"fit": fit, "table": table, "variants": variants, "mirror": mirror, "drift": drift,
     "reclusters": reclusters}[args.cmd](args)


if __name__ == "__main__":
    main()
