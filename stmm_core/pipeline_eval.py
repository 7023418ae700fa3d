"""Generic evaluation of a trained pipeline on a section with counts, through its capabilities only.

Used by ``stmm evaluate`` and the expression/retrieval suites for any family that does not bring its own
evaluation (:meth:`stmm_core.pipeline_base.Pipeline.evaluate`): expression prediction (capability
``expression``) is compared with the section's ``log1p(counts / total · target_sum)`` per gene and per spot
(:mod:`stmm_core.expression_metrics`); image → expression retrieval uses the family's scores (capability
``scoring``) and, for prediction, Pearson r between each predicted and each true profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.pipeline_base import Pipeline


def log1p_normalised(section: "Section", genes: Sequence[str], target_sum: float) -> np.ndarray:
    """``log1p(counts / total · target_sum)`` of *genes* (totals over all genes), float32 ``(N, len(genes))``;
    one :class:`DataError` naming missing genes."""
    import pandas as pd
    import scipy.sparse as sp

    idx = pd.Index(map(str, section.gene_names)).get_indexer(list(genes))
    missing = [g for g, i in zip(genes, idx) if i < 0]
    if missing:
        raise DataError(f"section {section.name!r} lacks {len(missing)} of the {len(genes)} predicted genes (e.g. "
                        f"{', '.join(map(repr, missing[:3]))}); use a section measured on the same genes")
    m = sp.csr_matrix(section.counts, dtype=np.float32)
    totals = np.asarray(m.sum(axis=1)).ravel()
    factor = np.where(totals > 0, target_sum / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
    return np.log1p((sp.diags(factor) @ m)[:, idx].toarray()).astype(np.float32)


def profile_scores(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(Q, N)`` Pearson r between predicted profile q and true profile n (rows over genes)."""
    def z(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        a = a - a.mean(1, keepdims=True)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return z(pred) @ z(true).T


def evaluate_section(pipe: "Pipeline", section: "Section", *, device: str = "cpu") -> dict[str, Any]:
    """Metrics of *pipe* on *section* from the capabilities its family offers (JSON-able)."""
    from stmm_core.expression_metrics import mse, pearson_per_gene, pearson_per_spot, retrieval_topk
    from stmm_core.pipeline_base import family_of, predict_expression, score

    fam = family_of(pipe.spec)
    res: dict[str, Any] = {"section": section.name, "n_spots": int(section.n_spots), "pipeline": fam.name,
                           "retrieval": {"candidates": "all spots of the section", "query": "image tile"}}
    if fam.has("expression"):
        pred = predict_expression(pipe, section, device=device)
        if pred.target_sum is None:
            raise DataError(f"the {fam.name!r} pipeline predicts in {pred.space or 'an unnamed space'}, which stmm "
                            "cannot compute from counts; it must evaluate itself (Pipeline.evaluate)")
        truth = log1p_normalised(section, pred.genes, pred.target_sum)
        hvg = [g for g in (pred.eval_genes or pred.genes) if g in set(pred.genes)]
        hvg_idx = [pred.genes.index(g) for g in hvg]
        res.update({
            "target_space": pred.space,
            "genes": {"n_targets": len(pred.genes), "n_evaluated_targets": len(pred.genes), "n_missing_targets": 0,
                      "n_eval_hvg": len(hvg)},
            "pearson_gene_all": pearson_per_gene(pred.values, truth, pred.genes),
            "pearson_gene_hvg": pearson_per_gene(pred.values[:, hvg_idx], truth[:, hvg_idx], hvg),
            "pearson_spot": pearson_per_spot(pred.values, truth), "mse": mse(pred.values, truth)})
        res["retrieval"]["decoder_expression"] = retrieval_topk(profile_scores(pred.values, truth))
    if fam.has("scoring"):
        res["retrieval"]["contrastive"] = retrieval_topk(score(pipe, section, device=device))
    return res


def fold_metrics(res: dict[str, Any]) -> dict[str, Any]:
    """The flat metrics of the expression/retrieval suites from an evaluation dict."""
    r = res.get("retrieval") or {}
    con, dec, itm = r.get("contrastive") or {}, r.get("decoder_expression") or {}, r.get("itm_rerank") or {}
    out: dict[str, Any] = {"n_spots": float(res["n_spots"])}
    if "pearson_gene_all" in res:
        out.update(pearson_hvg50=res["pearson_gene_hvg"]["mean"], pearson_all=res["pearson_gene_all"]["mean"],
                   pearson_spot=res["pearson_spot"]["mean"], mse=res["mse"])
    first = con or dec
    out.update(top1=first.get("top1"), top5=first.get("top5"), chance_top1=first.get("chance_top1"),
               chance_top5=first.get("chance_top5"), top1_decoder=dec.get("top1"), top5_decoder=dec.get("top5"))
    if itm:
        out.update(top1_itm=itm.get("top1"), top5_itm=itm.get("top5"))
    return out


def summary_lines(res: dict[str, Any]) -> list[str]:
    """Human-readable evaluation."""
    lines = [f"section {res['section']} ({res.get('split', 'held-out')}): {res['n_spots']} spots; "
             f"{res.get('pipeline', '')} pipeline"]
    for key, label in (("pearson_gene_hvg", "per-gene Pearson, evaluation genes"),
                       ("pearson_gene_all", "per-gene Pearson, all predicted genes")):
        if key in res:
            p = res[key]
            lines.append(f"  {label:<40} mean {p['mean']:.4f}  median {p['median']:.4f}  ({p['n_evaluated']} genes)")
    if "pearson_spot" in res:
        lines.append(f"  {'per-spot Pearson':<40} mean {res['pearson_spot']['mean']:.4f}")
        lines.append(f"  {'MSE':<40} {res['mse']:.4f}")
    for head, r in (res.get("retrieval") or {}).items():
        if isinstance(r, dict):
            lines.append(f"  retrieval {head:<20} top-1 {r['top1']:.4f} (chance {r['chance_top1']:.4f})  "
                         f"top-5 {r['top5']:.4f} (chance {r['chance_top5']:.4f})  N={r['n_candidates']}")
    return lines
