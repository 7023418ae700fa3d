"""Verdicts that respect uncertainty: paired differences over folds × seeds against the best baseline.

A pipeline and the best baseline (by mean of the primary metric) are paired on the same (section or held-out
fold, seed). The verdict is **beats** / **LOSES to** only when the 95 % t-interval of the paired differences
excludes zero; otherwise it says the difference is not resolved. Every pair the pipeline loses is listed, with
the sign test beside the interval. For the ``expression`` suite, the per-spot Pearson of every pipeline is shown
next to the training-mean predictor's (a mean profile already correlates with each spot, so 0.7 is not skill).
"""

from __future__ import annotations

import math
from typing import Optional

from stmm_core.benchmark.results import BenchmarkResult, Row, SummaryRow


def _label_of(row: Row, labels: set[str]) -> Optional[str]:
    if row.dataset in labels:
        return row.dataset
    for lab in labels:  # pooled folds: "5 folds (a, b, …)" / "2 of 5 folds (a, b)"
        if "(" in lab and row.dataset in [x.strip() for x in lab.rsplit("(", 1)[1].rstrip(")").split(",")]:
            return lab
    return None


def paired_stats(diffs: list[float]) -> dict[str, float]:
    """Mean, 95 % t-interval (None below 2 pairs), wins and two-sided sign-test p of paired differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    out: dict[str, float] = {"n": n, "mean": mean, "wins": sum(d > 0 for d in diffs),
                             "losses": sum(d < 0 for d in diffs)}
    if n >= 2:
        from scipy import stats

        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(lo=mean - half, hi=mean + half)
        k, m = out["wins"], out["wins"] + out["losses"]
        out["sign_p"] = float(stats.binomtest(int(k), int(m)).pvalue) if m else 1.0
    return out


def verdict_lines(result: BenchmarkResult, primary: str, higher: dict[str, bool], baselines: set[str]) -> list[str]:
    """One sentence per (dataset, non-baseline pipeline); see the module docstring."""
    from stmm_core.benchmark.report import fmt

    better = higher.get(primary, True)
    sign = 1.0 if better else -1.0
    by: dict[str, dict[str, SummaryRow]] = {}
    for s in result.summary:
        if s.metric == primary and s.mean is not None:
            by.setdefault(s.dataset, {})[s.pipeline] = s
    labels = set(by)
    values: dict[tuple[str, str], dict[tuple[str, Optional[int]], float]] = {}
    for r in result.rows:
        v = r.metrics.get(primary) if r.status == "ok" else None
        lab = _label_of(r, labels)
        if v is not None and math.isfinite(v) and lab is not None:
            values.setdefault((lab, r.pipeline), {})[(r.fold or r.dataset, r.seed)] = float(v)
    out = []
    for ds, rows in by.items():
        base = {p: s for p, s in rows.items() if p in baselines}
        if not base:
            continue
        best_name, best = (max if better else min)(base.items(), key=lambda kv: kv[1].mean)
        for p, s in rows.items():
            if p in baselines:
                continue
            a, b = values.get((ds, p), {}), values.get((ds, best_name), {})
            keys = sorted(set(a) & set(b), key=str)
            head = (f"On {ds}, **{p}** vs the best baseline **{best_name}** on {primary}: "
                    f"{fmt(s.mean)} vs {fmt(best.mean)}")
            if not keys:
                out.append(head + f" ({s.mean - best.mean:+.3f}; no paired runs, no verdict).")
                continue
            diffs = [sign * (a[k] - b[k]) for k in keys]  # > 0: the pipeline is better
            st = paired_stats(diffs)
            shown = sign * st["mean"]
            if st["wins"] == 0 and st["losses"] == 0:
                word, detail = "ties with", f"identical in all {st['n']} fold×seed pairs"
            elif "lo" not in st:
                word = "beats" if st["mean"] > 0 else "LOSES to"
                detail = f"one paired run, difference {shown:+.3f}, no interval"
            else:
                lo, hi = sorted((sign * st["lo"], sign * st["hi"]))
                word = ("beats" if st["lo"] > 0 else "LOSES to" if st["hi"] < 0
                        else "is not resolved from")
                detail = (f"paired difference {shown:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] over {st['n']} "
                          f"fold×seed pairs; better in {st['wins']} of {st['n']} (sign test p={st['sign_p']:.2g})")
            lost = [f"{k[0]}" + (f" seed {k[1]}" if k[1] is not None else "") + f" ({sign * d:+.3f})"
                    for k, d in zip(keys, diffs) if d < 0]
            line = head.replace(f"**{p}** vs", f"**{p}** {word}") + f" ({detail})."
            if lost:
                line += " Loses on: " + ", ".join(lost) + "."
            out.append(line)
    out += spot_lines(result)
    return out


def spot_lines(result: BenchmarkResult) -> list[str]:
    """Per-spot Pearson of every pipeline beside the training-mean predictor's, per dataset (when measured)."""
    from stmm_core.benchmark.report import fmt

    by: dict[str, dict[str, SummaryRow]] = {}
    for s in result.summary:
        if s.metric == "pearson_spot" and s.mean is not None:
            by.setdefault(s.dataset, {})[s.pipeline] = s
    out = []
    for ds, rows in by.items():
        if "train-mean" not in rows:
            continue
        floor = rows["train-mean"].mean
        others = ", ".join(f"{p} {fmt(s.mean)} ({s.mean - floor:+.3f})" for p, s in rows.items() if p != "train-mean")
        out.append(f"On {ds}, per-spot Pearson next to the training mean's {fmt(floor)} (predicting the same mean "
                   f"profile for every spot): {others}.")
    return out
