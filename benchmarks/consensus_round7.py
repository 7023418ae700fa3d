"""Seventh round on ``stereomm-expression`` (issue 13): analyses of saved fits and of the gene rankings.

Needs saved single fits (``consensus_dlpfc.py fit``; folders ``RECIPE@HASH8`` under ``--work``)::

    W=/path/to/work
    .venv/bin/python benchmarks/consensus_round7.py recluster    --work $W --folder stereomm-expression@cb2aa28a --sections 151676
    .venv/bin/python benchmarks/consensus_round7.py clusterseed  --work $W --folder stereomm-expression@cb2aa28a --sections 151675
    .venv/bin/python benchmarks/consensus_round7.py coherence    --work $W --sections 151676 151510 151675
    .venv/bin/python benchmarks/consensus_round7.py rankings     --sections her2st-A1 her2st-C1 her2st-D1 her2st-E1 her2st-F1 her2st-G2 her2st-H1 151676 151675

* ``recluster``: every saved embedding clustered again with other clustering settings (the task's PCA: 10, 20,
  30 or none; the spatial refinement over 0, 7 or 13 spots); the first row (PCA 20, 7 spots) is the recipe and
  must reproduce the saved ARI (a line says so when it does not).
* ``clusterseed``: every saved embedding clustered with three clustering seeds (the fit's seed, +1000, +2000):
  how much of the seed spread the mixture alone makes, with each mixture's log-likelihood bound beside its ARI.
* ``coherence``: a label-free criterion: the fraction of each spot's 6 nearest spots that share its domain, per
  saved fit, against the fit's ARI (Spearman), and the ARI of the most coherent seed.
* ``rankings``: for each section, the Seurat v3 ranking here against scanpy's own (``flavor="seurat_v3"``,
  needs scikit-misc: skipped without it), and the mean Moran's I (6-NN graph) of the top 3,000 genes of the
  Seurat-dispersion and the Seurat v3 rankings.

Sections: DLPFC numbers, ``her2st-XX`` for the pathologist-labelled HER2ST sections (``consensus_dlpfc.py``), and
``her2st-A1`` (the registered benchmark dataset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _path(section: str) -> str:
    if section == "her2st-A1":
        from stmm_core.benchmark.datasets import BUILTIN, resolve

        return resolve(BUILTIN["her2st-A1"]).local_path
    from consensus_dlpfc import _section_path

    return str(_section_path(section))


def _truth(d: dict) -> tuple[np.ndarray, np.ndarray, int]:
    import pandas as pd

    truth = pd.Series(d["truth"]).astype("object")
    mask = truth.notna().to_numpy() & (truth.astype(str) != "nan").to_numpy()
    return truth[mask].astype(str).to_numpy(), mask, len(set(truth[mask]))


def _cluster(emb: np.ndarray, k: int, seed: int, coords: np.ndarray, pca: int | None = 20, refine: int = 7,
             n_init: int = 20) -> tuple[np.ndarray, float]:
    from stmm_core.pipeline.refine import refine_labels
    from stmm_tasks.clustering import GMMClustering
    from stmm_tasks.params import GMMParams

    task = GMMClustering(GMMParams(pca=pca, n_init=n_init))
    lab = task.run(emb, k, seed=seed)
    if refine > 1:
        lab = refine_labels(coords, lab, refine)
    return lab, float(task.last_info["lower_bound"])


def recluster(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from consensus_round4 import _coords, _load

    variants = [(20, 7), (10, 7), (30, 7), (None, 7), (20, 0), (20, 13)]
    for sec in args.sections:
        fits, coords = _load(args.work, args.folder, sec), _coords(sec)
        for pca, refine in variants:
            scores = []
            for s, d in sorted(fits.items()):
                truth, mask, k = _truth(d)
                lab, _ = _cluster(d["embedding"], k, s, coords, pca=pca, refine=refine)
                scores.append(ari(truth, lab[mask]))
                if (pca, refine) == variants[0] and abs(scores[-1] - float(d["ari"])) > 1e-9:
                    print(f"  seed {s}: the recipe's clustering gives {scores[-1]:.4f}, saved {float(d['ari']):.4f}")
            a = np.array(scores)
            print(f"| {sec} | task PCA {pca} | refine {refine} | {len(a)} | {a.mean():.3f} ± {a.std(ddof=1):.3f} "
                  f"(min {a.min():.3f}) |", flush=True)


def clusterseed(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score as ari

    from consensus_round4 import _coords, _load

    for sec in args.sections:
        fits, coords = _load(args.work, args.folder, sec), _coords(sec)
        table = []
        for s, d in sorted(fits.items()):
            truth, mask, k = _truth(d)
            row = []
            for cs in (s, s + 1000, s + 2000):
                lab, bound = _cluster(d["embedding"], k, cs, coords, n_init=args.n_init)
                row.append((ari(truth, lab[mask]), bound))
            table.append(row)
            print(f"{sec} seed {s}: " + "  ".join(f"ARI {a:.3f} (bound {b:.3f})" for a, b in row), flush=True)
        a = np.array([[x[0] for x in r] for r in table])
        b = np.array([[x[1] for x in r] for r in table])
        better_bound_better_ari = np.mean([np.corrcoef(a[i], b[i])[0, 1] > 0 for i in range(len(a))
                                           if np.ptp(a[i]) > 0.02])
        print(f"| {sec} | n_init {args.n_init} | per-embedding sd over 3 clustering seeds (mean) {a.std(1, ddof=1).mean():.3f} "
              f"| sd of per-embedding means {a.mean(1).std(ddof=1):.3f} | all {a.mean():.3f} ± {a.ravel().std(ddof=1):.3f} "
              f"| embeddings whose higher-likelihood mixtures score higher (of those whose ARI moves > 0.02) "
              f"{better_bound_better_ari:.2f} |", flush=True)


def coherence(args: argparse.Namespace) -> None:
    from scipy.spatial import cKDTree
    from scipy.stats import spearmanr

    from consensus_round4 import _coords, _load

    folders = args.folders or ["stereomm-expression@cb2aa28a", "stereomm-expression@770f3e08"]
    for folder in folders:
        for sec in args.sections:
            fits = _load(args.work, folder, sec)
            if not fits:
                continue
            c = _coords(sec)
            nb = cKDTree(c).query(c, k=7)[1][:, 1:]
            hom = np.array([(d["labels"][nb] == d["labels"][:, None]).mean() for _, d in sorted(fits.items())])
            score = np.array([float(d["ari"]) for _, d in sorted(fits.items())])
            print(f"| {sec} | {folder} | {len(score)} | Spearman(coherence, ARI) {spearmanr(hom, score).correlation:+.2f} "
                  f"| most coherent seed {score[np.argmax(hom)]:.3f} | mean {score.mean():.3f} |", flush=True)


def rankings(args: argparse.Namespace) -> None:
    import warnings

    from stmm_core.pipeline.run import load_section
    from stmm_genes.hvg import HVGGeneEncoder, _library_scale, _normalise, _top_k
    from stmm_genes.moran import morans_i
    from stmm_genes.seurat_v3 import seurat_v3_variances

    k = 3000
    for sec in args.sections:
        s = load_section(_path(sec))
        x = s.counts
        logn = _normalise(x, _library_scale(x, 1e4), log1p=True)
        ours = seurat_v3_variances(x)
        v3 = _top_k(ours, k)
        dispersion = HVGGeneEncoder._scanpy_hvg(logn, list(s.gene_names), k, "seurat")
        mi = np.nan_to_num(morans_i(logn, s.coords))
        line = (f"| {sec} | {s.n_spots} spots, {x.shape[1]} genes | Moran's I of the top {k}: seurat "
                f"{mi[dispersion].mean():.4f}, seurat_v3 {mi[v3].mean():.4f} | shared {len(set(v3) & set(dispersion))} |")
        try:
            import anndata as ad
            import scanpy as sc
            import skmisc  # noqa: F401  (scanpy's seurat_v3 needs it)

            a = ad.AnnData(x.copy())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=k)
            theirs = a.var["variances_norm"].to_numpy()
            same = len(set(v3) & set(np.where(a.var["highly_variable"])[0]))
            line += f" against scanpy's seurat_v3: top {k} shared {same}, correlation {np.corrcoef(ours, theirs)[0, 1]:.4f} |"
        except ImportError:
            line += " scanpy's seurat_v3: scikit-misc not installed |"
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("recluster", "clusterseed", "coherence", "rankings"):
        p = sub.add_parser(name)
        p.add_argument("--sections", nargs="+", required=True)
        if name != "rankings":
            p.add_argument("--work", type=Path, required=True)
    for name in ("recluster", "clusterseed"):
        sub.choices[name].add_argument("--folder", default="stereomm-expression@cb2aa28a")
    sub.choices["clusterseed"].add_argument("--n-init", type=int, default=20)
    sub.choices["coherence"].add_argument("--folders", nargs="+", default=None)
    args = ap.parse_args()
    {"recluster": recluster, "clusterseed": clusterseed, "coherence": coherence, "rankings": rankings}[args.cmd](args)


if __name__ == "__main__":
    main()
