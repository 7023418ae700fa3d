"""Render benchmark results: a terminal table, Markdown (per suite and the combined RESULTS.md)."""

from __future__ import annotations

from typing import Any, Optional

from stmm_core.benchmark.results import BenchmarkResult, SummaryRow


def fmt(v: Optional[float], nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def _cell(s: Optional[SummaryRow]) -> str:
    if s is None:
        return ""
    if s.mean is None:
        return f"failed ({s.n_failed})" if s.n_failed else "n/a"
    text = fmt(s.mean) if s.n < 2 else f"{fmt(s.mean)} ± {fmt(s.sd)}"
    return text + (f" ({s.n_failed} failed)" if s.n_failed else "")


def summary_grid(result: BenchmarkResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per (pipeline, dataset), one column per metric that has a value."""
    by: dict[tuple[str, str], dict[str, SummaryRow]] = {}
    for s in result.summary:
        by.setdefault((s.pipeline, s.dataset), {})[s.metric] = s
    metrics = [m for m in result.metrics if any(m in d for d in by.values())]
    order = {p.name: i for i, p in enumerate(result.pipelines)}
    keys = sorted(by, key=lambda k: (k[1], order.get(k[0], 99)))
    header = ["pipeline", "dataset", "runs"] + metrics
    rows = []
    for k in keys:
        runs = max(x.n + x.n_failed for x in by[k].values())
        rows.append([k[0], _covered_label(result, *k), str(runs)] + [_cell(by[k].get(m)) for m in metrics])
    return header, rows


def _covered_label(result: BenchmarkResult, pipeline: str, label: str) -> str:
    """A pooled label ("5 folds (a, …)") narrowed to the folds *pipeline* has rows for ("3 of 5 folds (a, b, c)")."""
    if "(" not in label or not label.split(" ", 1)[0].isdigit():
        return label
    members = [x.strip() for x in label.rsplit("(", 1)[1].rstrip(")").split(",")]
    covered = sorted({r.fold or r.dataset for r in result.rows if r.pipeline == pipeline} & set(members))
    if not covered or len(covered) >= len(members):
        return label
    return f"{len(covered)} of {len(members)} folds ({', '.join(covered)})"


def failures(result: BenchmarkResult) -> list[tuple[str, str, str]]:
    """(pipeline, where, error) of failed rows, one per distinct error per pipeline."""
    seen = set()
    out = []
    for r in result.rows:
        if r.status == "failed":
            key = (r.pipeline, r.error)
            if key in seen:
                continue
            seen.add(key)
            where = r.dataset + (f" seed {r.seed}" if r.seed is not None else "")
            out.append((r.pipeline, where, r.error or "?"))
    return out


def table(result: BenchmarkResult) -> str:
    """Plain aligned text for the terminal."""
    header, rows = summary_grid(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [f"stmm benchmark {result.suite}: mean ± sd over {', '.join(map(str, result.seeds))} "
           f"(seeds){' and folds' if any(r.fold for r in result.rows) else ''}", line(header),
           line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    for pipe, where, err in failures(result):
        out.append(f"FAILED {pipe} on {where}: {err}")
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdicts(result: BenchmarkResult, primary: str, higher: dict[str, bool], baselines: set[str]) -> list[str]:
    """Plain sentences: each non-baseline pipeline against the best baseline, from paired differences over
    folds × seeds (see :mod:`stmm_core.benchmark.verdicts`)."""
    from stmm_core.benchmark.verdicts import verdict_lines

    return verdict_lines(result, primary, higher, baselines)


def markdown(result: BenchmarkResult, primary: str | None = None, higher: dict[str, bool] | None = None,
             baselines: set[str] | None = None, plots: list[str] | None = None, level: int = 2) -> str:
    """One suite as Markdown: summary table, verdicts, failures, pipelines (spec hashes), notes, environment."""
    h = "#" * level
    header, rows = summary_grid(result)
    out = [f"{h} `{result.suite}`", "",
           f"Command: `{result.command}`  ",
           f"Seeds: {', '.join(map(str, result.seeds))}; wall time {result.wall_seconds / 60:.1f} min; "
           f"{result.created}.", ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    out.append("")
    if primary and baselines is not None:
        v = verdicts(result, primary, higher or {}, baselines)
        if v:
            out += [f"- {line}" for line in v] + [""]
    fails = failures(result)
    if fails:
        out += ["Failed runs (kept as rows; the rest of the benchmark ran):", ""]
        out += [f"- {p} on {w}: `{_md_escape(e)}`" for p, w, e in fails] + [""]
    out += ["Pipelines:", ""]
    for p in result.pipelines:
        bits = [f"{p.source}"]
        if p.spec_hash:
            bits.append(f"spec {p.spec_hash[:12]}")
        if p.overrides:
            bits.append("overrides " + ", ".join(f"{k}={v}" for k, v in p.overrides.items()))
        bits += p.notes
        out.append(f"- **{p.name}**: " + "; ".join(_md_escape(b) for b in bits))
    out.append("")
    if result.notes:
        out += [f"- {_md_escape(n)}" for n in result.notes] + [""]
    e = result.environment
    out.append(f"Environment: stmm {e.stmm}, Python {e.python}, torch {e.torch} ({e.torch_threads} thread(s)), "
               f"{e.cpu} × {e.cpu_count}, GPU {e.gpu or 'none'}.")
    out.append("")
    for p in plots or []:
        out += [f"![{p}]({p})", ""]
    return "\n".join(out)


def combined(results: list[tuple[BenchmarkResult, dict[str, Any]]], intro: list[str]) -> str:
    """``RESULTS.md``: every suite found in the output folder, in a fixed order."""
    out = ["# stmm benchmark results", "", *intro, ""]
    for res, extra in results:
        out.append(markdown(res, **extra))
    return "\n".join(out).rstrip() + "\n"
