"""Which pipelines a benchmark runs: recipe names, glob patterns over recipes, or spec files.

A pipeline that cannot be built (unknown recipe, invalid override) is kept with its error, so it appears in
the results as a failed row instead of aborting the benchmark.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.spec import PipelineSpec

#: Pipelines treated as baselines when a config does not say otherwise.
DEFAULT_BASELINES = ("expression-gmm", "expression-leiden", "image-gmm", "hest-ridge", "graphst",
                     "stereomm-expression", "train-mean", "ridge-cv", "stain-ridge", "knn-expression")


@dataclass
class BenchPipeline:
    """A pipeline as the benchmark runs it."""

    name: str
    source: str
    spec: Optional["PipelineSpec"] = None
    method: Optional[str] = None  # e.g. "hest-ridge": not the pipeline's own fit
    #: ``module:function`` a recipe names to cluster domains itself (a peer package), instead of an stmm fit
    domains_method: Optional[str] = None
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: Optional[str] = None
    baseline: bool = False

    @property
    def kind(self) -> Optional[str]:
        return None if self.spec is None else self.spec.pipeline

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "pipeline": self.kind, "method": self.method,
                "spec_hash": None if self.spec is None else self.spec.hash(), "overrides": self.overrides,
                "notes": self.notes, "error": self.error}


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if head in ("train", "tiles", "features", "domains"):
        node: Any = data.get(head, {})
        for part in rest.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    comp = data.get("components", {}).get(head)
    if comp is None:
        return False
    params = comp.get("params") if isinstance(comp, dict) else None
    # a glob rule such as image.weights=random only applies to components that take that parameter
    return not rest or not isinstance(params, dict) or rest.split(".")[0] in params


def overrides_for(name: str, spec_data: dict[str, Any], rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overrides for pipeline *name*: glob rules (``"*"``, ``"stereomm*"``) apply where the spec has that
    setting; a rule naming the pipeline exactly applies unconditionally (errors then show in its row)."""
    out: dict[str, Any] = {}
    for pattern, sets in rules.items():
        if pattern == name:
            continue
        if fnmatch.fnmatchcase(name, pattern):
            out.update({k: v for k, v in sets.items() if _has_path(spec_data, k)})
    out.update(rules.get(name, {}))
    return out


def _from_recipe(name: str, rules: dict[str, dict[str, Any]], baselines: set[str]) -> BenchPipeline:
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import parse_spec

    def load() -> tuple[Any, dict[str, Any]]:
        recipe = get_recipe(name)
        return parse_spec(recipe["spec"]), recipe

    return _built(BenchPipeline(name=name, source=f"recipe:{name}", baseline=name in baselines), load, rules)


def _from_file(path: Path, rules: dict[str, dict[str, Any]], baselines: set[str]) -> BenchPipeline:
    from stmm_core.spec import load_spec

    def load() -> tuple[Any, dict[str, Any]]:
        spec = load_spec(path)  # raises a clear StmmError for a missing or malformed file
        raw = json.loads(path.read_text())
        return spec, (raw if isinstance(raw, dict) else {})

    return _built(BenchPipeline(name=path.stem, source=f"spec:{path}", baseline=path.stem in baselines), load,
                  rules)


def _built(pipe: BenchPipeline, load: Any, rules: dict[str, dict[str, Any]]) -> BenchPipeline:
    """Fill ``pipe`` from ``load() -> (spec, metadata)`` plus the benchmark's override rules; a spec that cannot
    be loaded is kept as the pipeline's error (the run reports it instead of stopping)."""
    try:
        base, meta = load()
        pipe.method = meta.get("method")
        pipe.domains_method = meta.get("domains_method")
        if pipe.domains_method:
            pipe.notes.append(f"peer package run by {pipe.domains_method} (not an stmm fit)")
        pipe.baseline = pipe.baseline or bool(meta.get("baseline"))
        _check_requires(pipe.name, meta)
        pipe.overrides = overrides_for(pipe.name, base.to_dict(), rules)
        pipe.spec = base.with_overrides(pipe.overrides) if pipe.overrides else base
    except StmmError as exc:
        pipe.error = str(exc)
    _annotate(pipe)
    return pipe


def _check_requires(name: str, meta: dict[str, Any]) -> None:
    """A recipe naming ``requires`` (modules) and ``extra`` (a pyproject extra) stops here, with one message, when
    those modules are not installed (checked without importing them)."""
    import importlib.util

    lacking = [m for m in meta.get("requires") or [] if importlib.util.find_spec(m) is None]
    if lacking:
        extra = meta.get("extra")
        how = f"pip install .[{extra}]  (from the stmm checkout; or pip install 'stmm[{extra}]')" if extra else \
            f"pip install {' '.join(lacking)}"
        raise StmmError(f"{name} needs optional package(s) that are not installed (missing module"
                        f"{'s' if len(lacking) != 1 else ''}: {', '.join(lacking)}): {how}")


def _annotate(pipe: BenchPipeline) -> None:
    spec = pipe.spec
    if spec is None:
        return
    img = spec.components.get("image")
    if pipe.method in ("train-mean", "stain-ridge"):  # neither reads the spec's image encoder
        pipe.notes.append("no image encoder weights used" + (" (weight-free stain-stats features)"
                                                             if pipe.method == "stain-ridge" else " (no image)"))
    elif img is not None and img.params.get("weights") == "random":
        pipe.notes.append(f"image encoder {img.name} randomly initialised (no pretrained weights reachable)")


#: ``RECIPE+consensusN`` in ``--pipelines``: the recipe with ``domains.consensus=N`` (seed s = seeds s*N … s*N+N-1);
#: ``RECIPE+consensusN-embedding`` also sets ``domains.consensus_mode=embedding`` (cluster the seeds' embeddings),
#: ``RECIPE+consensusN-coassoc`` sets ``coassoc`` (spectral clustering of the seeds' co-association).
_CONSENSUS = re.compile(r"(.+)\+consensus(\d+)(?:-(vote|embedding|coassoc))?")


def select(items: list[str] | None, default: list[str], rules: dict[str, dict[str, Any]] | None = None,
           baselines: list[str] | None = None) -> list[BenchPipeline]:
    """Resolve ``--pipelines`` items (recipe names, glob patterns over recipe names, spec-file paths)."""
    from stmm_core.recipes import all_recipes

    rules = rules or {}
    base_set = set(DEFAULT_BASELINES if baselines is None else baselines)
    names = list(all_recipes())
    out: list[BenchPipeline] = []
    for item in items or default:
        p = Path(item)
        if item.endswith(".json") or p.is_file():
            if not p.is_file():
                raise StmmError(f"--pipelines {item}: spec file not found")
            out.append(_from_file(p, rules, base_set))
        elif any(ch in item for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, item)]
            if not hits:
                raise StmmError(f"--pipelines {item!r} matches no recipe; recipes: {', '.join(sorted(names))}")
            out.extend(_from_recipe(n, rules, base_set) for n in sorted(hits))
        elif _CONSENSUS.fullmatch(item):  # recipe+consensusN: the recipe's consensus of N seeds, its own row
            name, n, mode = _CONSENSUS.fullmatch(item).groups()
            pipe = _from_recipe(name, rules, base_set)
            pipe.name, pipe.baseline = item, item in base_set
            if pipe.spec is not None:
                try:
                    extra: dict[str, Any] = {"domains.consensus": int(n)}
                    if mode:
                        extra["domains.consensus_mode"] = mode
                    pipe.overrides = {**pipe.overrides, **extra}
                    pipe.spec = pipe.spec.with_overrides(extra)
                except StmmError as exc:
                    pipe.spec, pipe.error = None, str(exc)
            out.append(pipe)
        else:  # a name: unknown ones stay as failed rows (with the registry's suggestion)
            out.append(_from_recipe(item, rules, base_set))
    seen: set[str] = set()
    unique = []
    for pipe in out:
        if pipe.name not in seen:
            seen.add(pipe.name)
            unique.append(pipe)
    return unique
