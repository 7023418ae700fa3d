"""``stmm info`` as readable text: a recipe's components and the settings it sets, a component's parameters
(default, allowed values, meaning), a published encoder's loading and licence facts. ``--json`` keeps the raw
records (no heavy imports here: the schemas come from the plug-in metadata)."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any


def _width() -> int:
    return max(80, min(140, shutil.get_terminal_size((100, 24)).columns))


def _wrap(text: str, indent: int, width: int) -> list[str]:
    return textwrap.wrap(text, width=max(30, width - indent)) or [""]


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    """Columns padded to their widest cell; the last column wraps under itself."""
    width = _width()
    cols = len(header)
    w = [max(len(str(r[i])) for r in [header, *rows]) for i in range(cols - 1)]
    w = [min(x, 28) for x in w]
    indent = sum(w) + 2 * (cols - 1)
    out = []
    for r in [header, *rows]:
        head = "  ".join(f"{str(r[i])[:w[i]] if len(str(r[i])) <= 28 else str(r[i])[:27] + '…':<{w[i]}}"
                         for i in range(cols - 1))
        wrapped = _wrap(str(r[-1]), indent, width)
        out.append(f"{head}  {wrapped[0]}".rstrip())
        out += [" " * (indent) + ln for ln in wrapped[1:]]
    return out


def _short(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else v


def _allowed(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(map(str, prop["enum"]))
    if "anyOf" in prop:
        return " or ".join(filter(None, (_allowed(p) for p in prop["anyOf"])))
    if "const" in prop:
        return str(prop["const"])
    t = prop.get("type", "")
    t = {"integer": "integer", "number": "number", "string": "text", "boolean": "true|false", "array": "list",
         "object": "mapping", "null": "none"}.get(t, t)
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    if lo is not None and hi is not None:
        t += f" {lo}…{hi}"
    elif lo is not None:
        t += f" ≥ {lo}" if "minimum" in prop else f" > {lo}"
    elif hi is not None:
        t += f" ≤ {hi}"
    return t


def component_text(d: dict[str, Any]) -> list[str]:
    """A component (``ComponentInfo.describe()``) as lines."""
    alias = f"; alias {', '.join(d['aliases'])}" if d.get("aliases") else ""
    lines = [f"{d['name']}  ({d['kind']}, package {d.get('package', '?')}{alias})"]
    lines += _wrap(d.get("summary", ""), 0, _width())
    schema = d.get("params") or {}
    if schema.get("description"):
        lines += [""] + _wrap(schema["description"], 0, _width())
    props = schema.get("properties") or {}
    lines.append("")
    if not props:
        lines.append("no parameters")
        return lines
    rows = [(k, _short(p.get("default", "(required)")), _allowed(p), p.get("description", ""))
            for k, p in props.items()]
    lines += _table(rows, ("parameter", "default", "allowed", "meaning"))
    slot = {"image_encoder": "image", "gene_encoder": "gene", "fusion": "fusion", "graph_builder": "builder",
            "graph_model": "graph", "task": "task"}.get(d["kind"])
    if slot:
        lines += ["", f"change one in a recipe: stmm compose --recipe stereomm --set {slot}.{next(iter(props))}=VALUE "
                      "-o spec.json"]
    return lines


def recipe_text(r: dict[str, Any]) -> list[str]:
    """A recipe record (``name``, ``summary``, ``spec``, ...) as lines."""
    width = _width()
    spec = r.get("spec") or {}
    lines = [f"{r['name']}  (recipe, {spec.get('pipeline', 'graph-fusion')} pipeline, package "
             f"{r.get('package', 'stmm')})"]
    lines += _wrap(r.get("summary", ""), 0, width)
    lines.append("")
    rows = []
    for slot, ref in (spec.get("components") or {}).items():
        if ref is None:
            rows.append((slot, "none", ""))
            continue
        params = ", ".join(f"{k}={_short(v)}" for k, v in (ref.get("params") or {}).items())
        rows.append((slot, ref["name"], params or "component defaults"))
    lines += _table(rows, ("slot", "component", "settings the recipe sets (others: component defaults)"))
    for block in ("tiles", "features", "domains", "train"):
        vals = spec.get(block)
        if vals:
            lines.append(f"{block}: " + ", ".join(f"{k}={_short(v)}" for k, v in vals.items()))
    for key, label in (("reference", "reference"), ("defaults_note", "defaults chosen")):
        if r.get(key):
            lines += [""] + _wrap(f"{label}: {r[key]}", 0, width)
    lines += ["", f"run it: stmm run {r['name']} --data SECTION -o run/ -k auto     "
                  f"(change it: stmm compose --recipe {r['name']} --set SLOT.PARAM=VALUE)",
              f"the components' parameters: stmm info COMPONENT (e.g. stmm info "
              f"{next((v['name'] for v in (spec.get('components') or {}).values() if v), 'vgae')})"]
    return lines


def zoo_text(z: dict[str, Any]) -> list[str]:
    """A published encoder of the zoo index as lines."""
    width = _width()
    lines = [f"{z['name']}  ({z.get('title', '')})", ""]
    keys = ["modality", "repo", "loader", "model", "package", "kwargs", "embedding", "embedding_dim", "input_size",
            "mean", "std", "license", "gated", "verified"]
    rows = [(k, _short(z[k])) for k in keys if z.get(k) not in (None, {}, [], "")]
    lines += _table(rows, ("field", "value"))
    if z.get("notes"):
        lines += [""] + _wrap(f"notes: {z['notes']}", 0, width)
    if z.get("loader") in ("timm", "transformers") and z.get("modality") == "image":
        lines += ["", f"use it: stmm compose --recipe stereomm --encoder {z['name']} -o spec.json"]
    return lines


def family_text(f: dict[str, Any]) -> list[str]:
    """A pipeline family (``FamilyInfo.describe()``) as lines."""
    width = _width()
    lines = [f"{f['name']}  (pipeline family, package {f.get('package') or '?'}; implementation {f['impl']})"]
    lines += _wrap(f.get("summary", ""), 0, width)
    lines += ["", f"capabilities: {', '.join(f.get('capabilities') or []) or 'none'}", ""]
    rows = [(slot, s["kind"], "required" if s["required"] else "optional", ", ".join(s.get("needs", [])))
            for slot, s in (f.get("slots") or {}).items()]
    lines += _table(rows, ("slot", "component kind", "", "needs methods"))
    props = (f.get("train") or {}).get("properties") or {}
    if props:
        lines += ["", f"train settings ({f.get('train_schema')}):"]
        rows = [(k, _short(p.get("default", "(nested)" if "$ref" in p or "allOf" in p else "(required)")),
                 _allowed(p), p.get("description", "")) for k, p in props.items()]
        lines += _table(rows, ("setting", "default", "allowed", "meaning"))
    if f.get("fit_options"):
        lines += ["", "stmm fit options: " + ", ".join("--" + o.replace("_", "-") for o in f["fit_options"])]
    return lines
