"""Evaluate a Magic run on a held-out section: expression prediction and image → expression retrieval.

* Per-gene Pearson r across the section's spots, averaged over all targets and over the evaluation HVGs
  (the most variable targets **of the training sections**, fixed at training time, never chosen from test
  results); genes constant in the held-out truth are excluded and counted.
* Per-spot Pearson r across the targets.
* Retrieval: every spot's image is the query; the candidates are the expression profiles of **all** spots of
  the section; top-1/top-5 with chance k/N. Reported per scoring rule, never OR-ed: ``contrastive``
  (stage-1 image vs gene embeddings), ``itm_rerank`` (the contrastive top-``itm_k`` re-ranked by the ITM
  head), ``decoder_expression`` (Pearson between the stage-2 prediction and each true profile).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_magic.run_io import MagicRun


def expression_scores(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(Q, N)`` Pearson r between predicted profile q and true profile n (the core's
    :func:`stmm_core.pipeline_eval.profile_scores`, so Magic and the generic evaluation score alike)."""
    from stmm_core.pipeline_eval import profile_scores

    return profile_scores(pred, true)


@torch.no_grad()
def itm_rerank_scores(run: "MagicRun", tiles: torch.Tensor, tokens: torch.Tensor, contrastive: np.ndarray,
                      k: int) -> np.ndarray:
    """Scores ``(N, N)``: the contrastive top-*k* of every query re-ranked by the ITM match probability
    (placed above all other candidates, which keep their contrastive order)."""
    m = run.stage1
    img_tok = torch.cat([m.image(tiles[i:i + 64])["tokens"] for i in range(0, len(tiles), 64)])
    gene_tok = torch.cat([m.gene(tokens[i:i + 64])["tokens"] for i in range(0, len(tokens), 64)])
    n = contrastive.shape[0]
    k = min(k, n)
    top = np.argsort(-contrastive, axis=1, kind="stable")[:, :k]
    out = contrastive - contrastive.max() - 10.0  # below every re-ranked candidate
    for q in range(n):
        cand = torch.as_tensor(top[q])
        prob = m.matching.score(m.fusion, img_tok[q].unsqueeze(0).expand(k, -1, -1), gene_tok[cand])
        out[q, top[q]] = prob.numpy().astype(np.float64)
    return out


def evaluate_section(run: "MagicRun", section: "Section", *, allow_missing_genes: bool = False,
                     itm_k: int = 16, cache: Any = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All metrics of *run* on *section* (see the module docstring) as a JSON-able dict."""
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.genes import gene_columns, log1p_expression
    from stmm_core.expression_metrics import mse, pearson_per_gene, pearson_per_spot, retrieval_topk
    from stmm_magic.pipeline import image_input_px

    log = log or (lambda m: None)
    if run.stage2 is None:
        raise DataError(f"{run.path} has no stage-2 decoder; train it with 'stmm run magic … --stage 2'")
    spec = run.spec
    targets = run.targets
    cols = gene_columns(section, targets, "target genes", allow_missing=allow_missing_genes)
    keep = np.flatnonzero(cols >= 0)
    if len(keep) == 0:
        raise DataError(f"section {section.name!r} measures none of the run's {len(targets)} target genes")
    kept = [targets[j] for j in keep]
    missing = [targets[j] for j in np.flatnonzero(cols < 0)]
    target_sum = float(spec.components["decoder"].params["target_sum"])
    truth = log1p_expression(section, kept, target_sum)

    size = tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
    tiles = torch.from_numpy(section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value, cache))
    pred = run.stage2.predict(tiles).numpy()[:, keep]

    hvg = [g for g in run.eval_hvg if g in set(kept)]
    hvg_idx = [kept.index(g) for g in hvg]
    result: dict[str, Any] = {
        "run": str(run.path),
        "section": section.name,
        "n_spots": int(section.n_spots),
        "target_space": "log1p(counts / total * %g)" % target_sum,
        "tile_fullres_px": float(size),
        "image_init": run.meta.get("image_init"),
        "genes": {"n_targets": len(targets), "n_evaluated_targets": len(kept), "n_missing_targets": len(missing),
                  "missing_targets": missing, "n_eval_hvg": len(hvg),
                  "eval_hvg_source": "most variable targets of the training sections (fixed at training time)"},
        "pearson_gene_all": pearson_per_gene(pred, truth, kept),
        "pearson_gene_hvg": pearson_per_gene(pred[:, hvg_idx], truth[:, hvg_idx], hvg),
        "pearson_spot": pearson_per_spot(pred, truth),
        "mse": mse(pred, truth),
        "retrieval": {"candidates": "all spots of the held-out section", "query": "image tile",
                      "decoder_expression": retrieval_topk(expression_scores(pred, truth))},
    }
    if run.stage1 is not None:
        tok_np = run.stage1.gene.tokenize(section)
        n_missing_in = int((np.asarray(gene_columns(section, run.stage1.gene.vocab, "input genes",
                                                    allow_missing=True)) < 0).sum())
        result["genes"]["n_missing_input_genes"] = n_missing_in
        tokens = torch.from_numpy(tok_np)
        emb = run.stage1.embed(tiles, tokens)
        contrastive = (emb["image"] @ emb["gene"].T).numpy().astype(np.float64)
        result["retrieval"]["contrastive"] = retrieval_topk(contrastive)
        if run.stage1.matching is not None and itm_k > 0:
            result["retrieval"]["itm_rerank"] = retrieval_topk(itm_rerank_scores(run, tiles, tokens, contrastive,
                                                                                 itm_k))
            result["retrieval"]["itm_rerank"]["k"] = int(min(itm_k, section.n_spots))
    log(f"evaluated {section.name}: {section.n_spots} spots, {len(kept)} targets")
    return result


def training_use(meta: dict[str, Any], section: "Section", data: str | Path) -> list[str]:
    """The stages of the run (``"stage 1"``, ``"stage 2"``) that were trained on *section*: the same content
    (fingerprint of spot ids, coordinates and count totals, under any file name), or the same file."""
    from stmm_core.data.sanity import section_fingerprint

    used = []
    here = Path(data).resolve()
    fp = section_fingerprint(section)
    for key, label in (("sections_stage1", "stage 1"), ("sections_stage2", "stage 2")):
        for rec in meta.get(key) or []:
            path = Path(str(rec.get("path") or ""))
            if rec.get("fingerprint") == fp or (path.is_absolute() and path.resolve() == here):
                used.append(label)
                break
    return used


def evaluate_run(run_dir: str | Path, data: str | Path, *, allow_missing_genes: bool = False, itm_k: int = 16,
                 use_cache: bool = True, log: Callable[[str], None] | None = None,
                 allow_training: bool = False) -> dict[str, Any]:
    """Load the run folder and evaluate it on the section at *data*. A section the run was trained on is refused
    (its metrics are not held-out) unless *allow_training*; then the result says ``"split": "training"``."""
    from stmm_core.data.cache import FeatureCache
    from stmm_magic.pipeline import read_sections
    from stmm_magic.run_io import STAGE_FILES, load_run

    run_dir = Path(run_dir)
    stages = (1, 2) if (run_dir / STAGE_FILES[1]).is_file() else (2,)
    run = load_run(run_dir, stages=stages)
    section = read_sections([data])[0]
    used = training_use(run.meta, section, data)
    if used and not allow_training:
        raise DataError(f"--data {data}: section {section.name!r} ({section.n_spots} spots) is one this run was "
                        f"trained on ({', '.join(used)}), so its metrics would not be held-out; give a held-out "
                        "section, or add --allow-training-section to score the training fit (labelled as such)")
    res = evaluate_section(run, section, allow_missing_genes=allow_missing_genes, itm_k=itm_k,
                           cache=FeatureCache() if use_cache else None, log=log)
    res["split"] = "training" if used else "held-out"
    if used:
        res["trained_on_by"] = used
    return res


def summary_lines(res: dict[str, Any]) -> list[str]:
    """Human-readable report."""
    g = res["genes"]
    split = res.get("split", "held-out")
    tag = " (TRAINING section of this run: not held-out)" if split == "training" else " (held-out)"
    lines = [f"section {res['section']}{tag}: {res['n_spots']} spots; targets {g['n_evaluated_targets']}/{g['n_targets']} "
             f"evaluated ({g['n_missing_targets']} missing); expression space {res['target_space']}"]
    for key, label in (("pearson_gene_hvg", f"per-gene Pearson, {g['n_eval_hvg']} training HVGs"),
                       ("pearson_gene_all", "per-gene Pearson, all targets")):
        p = res[key]
        lines.append(f"  {label:<40} mean {p['mean']:.4f}  median {p['median']:.4f}  "
                     f"({p['n_evaluated']} genes; {p['n_constant_excluded']} constant excluded, "
                     f"{p['n_constant_prediction']} constant predictions counted as r=0)")
    ps = res["pearson_spot"]
    lines.append(f"  {'per-spot Pearson across targets':<40} mean {ps['mean']:.4f}  ({ps['n_evaluated']} spots)")
    lines.append(f"  {'MSE':<40} {res['mse']:.4f}")
    lines.append(f"  retrieval: query = image tile, candidates = {res['retrieval']['candidates']}")
    for head in ("contrastive", "itm_rerank", "decoder_expression"):
        r = res["retrieval"].get(head)
        if r:
            lines.append(f"    {head:<20} top-1 {r['top1']:.4f} (chance {r['chance_top1']:.4f})  "
                         f"top-5 {r['top5']:.4f} (chance {r['chance_top5']:.4f})  N={r['n_candidates']}")
    return lines
