"""Versioned benchmark results: pydantic models, environment capture, JSON schema and a schema check.

Every run of a suite writes one :class:`BenchmarkResult` as JSON. Two files from different machines or
versions can be diffed: the environment (versions, CPU/GPU, threads), the seeds and the spec hash of every
pipeline are recorded beside the figures. ``schema.json`` beside it is ``BenchmarkResult.model_json_schema()``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

#: Version of the result format; bump when a field changes meaning.
RESULT_VERSION = 1

Status = Literal["ok", "failed", "not applicable"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Environment(_Model):
    """Where the figures were measured."""

    stmm: str
    python: str
    platform: str
    cpu: str
    cpu_count: int
    torch: Optional[str] = None
    torch_threads: Optional[int] = None
    gpu: Optional[str] = None
    packages: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description="STMM_* variables that change behaviour")


class DatasetRecord(_Model):
    name: str
    path: str
    sha256: Optional[str] = None
    verified: bool = False
    label: Optional[str] = None
    description: str = ""


class PipelineRecord(_Model):
    name: str
    source: str = Field(..., description="recipe name, spec file, or 'error'")
    pipeline: Optional[str] = Field(None, description="pipeline type (graph-fusion, magic)")
    method: Optional[str] = Field(None, description="benchmark method when not the pipeline's own fit (hest-ridge)")
    spec_hash: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    error: Optional[str] = None


class Row(_Model):
    """One run: a pipeline on a dataset (or fold) with one seed."""

    pipeline: str
    dataset: str
    fold: Optional[str] = None
    seed: Optional[int] = None
    status: Status
    error: Optional[str] = None
    seconds: Optional[float] = None
    metrics: dict[str, Optional[float]] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class SummaryRow(_Model):
    """Mean ± sd of one metric over the successful rows of a pipeline on a dataset (or over folds)."""

    pipeline: str
    dataset: str
    metric: str
    mean: Optional[float]
    sd: Optional[float]
    n: int
    n_failed: int


class BenchmarkResult(_Model):
    """What ``stmm benchmark SUITE`` writes to ``results/<suite>.json``."""

    format: Literal["stmm-benchmark"] = "stmm-benchmark"
    result_version: int = RESULT_VERSION
    suite: str
    created: str
    command: str
    wall_seconds: float
    seeds: list[int]
    metrics: list[str] = Field(..., description="metric columns in display order")
    environment: Environment
    datasets: list[DatasetRecord]
    pipelines: list[PipelineRecord]
    rows: list[Row]
    summary: list[SummaryRow]
    notes: list[str] = Field(default_factory=list)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _version(module: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def capture_environment(heavy: bool = True) -> Environment:
    """Versions, CPU/GPU and threads; ``heavy=False`` skips importing torch (tests of light paths)."""
    import stmm_core

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - non-Linux
        pass
    env = Environment(
        stmm=stmm_core.__version__, python=platform.python_version(), platform=platform.platform(), cpu=cpu,
        cpu_count=os.cpu_count() or 1,
        packages={k: v for k in ("numpy", "scipy", "scikit-learn", "anndata", "timm", "torch-geometric",
                                 "pydantic") if (v := _version(k))},
        env={k: v for k, v in os.environ.items() if k.startswith("STMM_") and k not in ("STMM_TOKEN",)},
    )
    if heavy:
        import torch

        env.torch = torch.__version__
        env.torch_threads = torch.get_num_threads()
        env.gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return env


def _finite(v: Optional[float]) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def summarise(rows: list[Row], metrics: list[str], by_fold_group: dict[str, str] | None = None) -> list[SummaryRow]:
    """Mean ± sd per (pipeline, dataset, metric); rows whose dataset maps in *by_fold_group* are pooled."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.status == "not applicable":
            continue
        ds = (by_fold_group or {}).get(r.dataset, r.dataset)
        groups.setdefault((r.pipeline, ds), []).append(r)
    out = []
    for (pipe, ds), rs in groups.items():
        ok = [r for r in rs if r.status == "ok"]
        for m in metrics:
            vals = [float(r.metrics[m]) for r in ok if _finite(r.metrics.get(m))]
            if not vals and ok and all(m not in r.metrics for r in ok):
                continue
            mean = statistics.fmean(vals) if vals else None
            sd = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            out.append(SummaryRow(pipeline=pipe, dataset=ds, metric=m, mean=mean, sd=sd, n=len(vals),
                                  n_failed=len(rs) - len(ok)))
    return out


def schema() -> dict[str, Any]:
    """The JSON schema of :class:`BenchmarkResult`."""
    s = BenchmarkResult.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return s


def write_result(result: BenchmarkResult, results_dir: Path, stem: str | None = None) -> Path:
    """Write ``<stem or suite>.json`` (and ``schema.json``) atomically, checked against the schema first."""
    results_dir.mkdir(parents=True, exist_ok=True)
    data = json.loads(result.model_dump_json())
    sch = schema()
    problems = validate(data, sch)
    if problems:  # pragma: no cover - a bug, not a user error
        raise RuntimeError("benchmark result does not match its schema: " + "; ".join(problems[:5]))
    stem = stem or result.suite
    from stmm_core.atomic import write_text

    for name, payload in ((f"{stem}.json", data), ("schema.json", sch)):
        write_text(results_dir / name, json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return results_dir / f"{stem}.json"


def merge(parts: list[BenchmarkResult]) -> BenchmarkResult:
    """One result from shards of the same suite run in parallel (rows concatenated, summary recomputed)."""
    from stmm_core.errors import DataError

    if not parts:
        raise DataError("nothing to merge")
    suites = {p.suite for p in parts}
    if len(suites) != 1:
        raise DataError(f"cannot merge results of different suites: {sorted(suites)}")
    first = parts[0]
    # a pipeline whose spec differs between shards (e.g. a component default changed in between) is kept
    # apart under "name@hash", so one mean never mixes two specs
    seen_hash: dict[str, str | None] = {}
    rows: list[Row] = []
    pipes: dict[str, PipelineRecord] = {}
    notes_extra: list[str] = []
    for p in parts:
        rename: dict[str, str] = {}
        for rec in p.pipelines:
            if not any(r.pipeline == rec.name for r in p.rows):
                continue  # listed but never run in this shard
            if rec.name in seen_hash and seen_hash[rec.name] != rec.spec_hash:
                new = f"{rec.name}@{(rec.spec_hash or 'none')[:8]}"
                rename[rec.name] = new
                notes_extra.append(f"{new}: the same recipe as {rec.name} but a different spec (hash "
                                   f"{(rec.spec_hash or '')[:12]} vs {(seen_hash[rec.name] or '')[:12]}): run after "
                                   "a default changed, so it is reported separately.")
                pipes.setdefault(new, rec.model_copy(update={"name": new}))
            else:
                seen_hash.setdefault(rec.name, rec.spec_hash)
                pipes.setdefault(rec.name, rec)
        rows += [r.model_copy(update={"pipeline": rename.get(r.pipeline, r.pipeline)}) for r in p.rows]
    for p in parts:
        for rec in p.pipelines:
            pipes.setdefault(rec.name, rec)
    datasets: dict[str, DatasetRecord] = {}
    for p in parts:
        for d in p.datasets:
            datasets.setdefault(d.name, d)
    groups = {}
    for p in parts:
        names = {d.name for d in p.datasets}
        for s in p.summary:
            if s.dataset not in names:  # a pooled fold group
                groups.update({n: s.dataset for n in names})
    if groups:  # relabel the pooled group from the folds actually evaluated across all shards
        held = sorted({r.fold for r in rows if r.fold})
        members = sorted(groups)
        label = (f"{len(members)} folds ({', '.join(members)})" if set(held) >= set(members)
                 else f"{len(held)} of {len(members)} folds ({', '.join(held)})")
        groups = {n: label for n in members}
    notes = list(dict.fromkeys(n for p in parts for n in p.notes))
    notes += notes_extra
    if len(parts) > 1:
        notes.append(f"Merged from {len(parts)} parts run side by side (commands joined with ' ; ').")
    return BenchmarkResult(
        suite=first.suite, created=max(p.created for p in parts), command=" ; ".join(p.command for p in parts),
        wall_seconds=max(p.wall_seconds for p in parts), seeds=sorted({s for p in parts for s in p.seeds}),
        metrics=first.metrics, environment=first.environment, datasets=list(datasets.values()),
        pipelines=list(pipes.values()), rows=rows, summary=summarise(rows, first.metrics, groups or None),
        notes=notes)


def load_result(path: Path) -> BenchmarkResult:
    from stmm_core.errors import DataError

    try:
        return BenchmarkResult.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a stmm benchmark result: {str(exc).splitlines()[0]}") from None


# -- a small JSON-schema checker for the subset pydantic emits (no extra dependency) -----------------------

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(data: Any, sch: dict[str, Any], _root: dict[str, Any] | None = None, _at: str = "$") -> list[str]:
    """Problems of *data* against *sch* (type, properties, required, additionalProperties, items, enum,
    const, anyOf, $ref into $defs); an empty list means valid."""
    root = _root or sch
    if "$ref" in sch:
        name = sch["$ref"].split("/")[-1]
        return validate(data, root["$defs"][name], root, _at)
    if "anyOf" in sch:
        branches = [validate(data, s, root, _at) for s in sch["anyOf"]]
        return [] if any(not b for b in branches) else [f"{_at}: matches none of anyOf ({branches[0][0]})"]
    problems: list[str] = []
    t = sch.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        ok = False
        for one in types:
            if one == "integer":
                ok |= isinstance(data, int) and not isinstance(data, bool)
            elif one == "number":
                ok |= isinstance(data, (int, float)) and not isinstance(data, bool)
            elif one in _TYPES:
                ok |= isinstance(data, _TYPES[one]) and not (one != "boolean" and isinstance(data, bool))
        if not ok:
            return [f"{_at}: expected {t}, got {type(data).__name__}"]
    if "enum" in sch and data not in sch["enum"]:
        problems.append(f"{_at}: {data!r} not in {sch['enum']}")
    if "const" in sch and data != sch["const"]:
        problems.append(f"{_at}: {data!r} != {sch['const']!r}")
    if isinstance(data, dict):
        props = sch.get("properties", {})
        for req in sch.get("required", []):
            if req not in data:
                problems.append(f"{_at}: missing {req!r}")
        extra = sch.get("additionalProperties", True)
        for k, v in data.items():
            if k in props:
                problems += validate(v, props[k], root, f"{_at}.{k}")
            elif extra is False:
                problems.append(f"{_at}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                problems += validate(v, extra, root, f"{_at}.{k}")
    if isinstance(data, list) and isinstance(sch.get("items"), dict):
        for i, v in enumerate(data):
            problems += validate(v, sch["items"], root, f"{_at}[{i}]")
    return problems
