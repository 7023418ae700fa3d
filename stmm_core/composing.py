"""Composing a pipeline spec: start from a recipe (its tuned settings kept), swap components, name pretrained
encoders from the zoo index, and say when a composition is not a tuned recipe.

``stmm compose`` is the user-facing command (:mod:`stmm_core.cli.compose_cmd`); ``stmm run``/``demo`` and the
benchmark runner start from a recipe through :func:`compose_spec` with no slot replaced.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

NONE_WORDS = {"none", "off", "no", ""}

#: The slots a recipe is compared on when telling a user that a composition equals a recipe's components.
_SETTINGS = ("tiles", "features", "domains", "train")


def zoo_image_component(name: str) -> dict[str, Any] | None:
    """``{"name": component, "params": {...}}`` loading the published encoder *name* of the zoo index
    (``stmm list --pretrained``), or ``None`` when the index has no image encoder of that name.

    timm-loaded entries become the ``timm`` component (``model = hf-hub:…``, the entry's exact keyword arguments,
    class-token or class+mean pooling); ``transformers`` entries the ``transformers`` component. Entries that need
    their own package are an error naming the package."""
    from stmm_core.errors import SpecError
    from stmm_core.plugins import get_pretrained

    entry = get_pretrained(name.lower())
    if entry is None or entry.modality != "image":
        return None
    emb = entry.embedding.lower()
    if entry.loader == "timm":
        pool = "cls+mean" if "concatenated with the mean" in emb else ("token" if "class token" in emb else "default")
        return {"name": "timm", "params": {"model": entry.model, "model_kwargs": dict(entry.kwargs), "pool": pool}}
    if entry.loader == "transformers":
        pool = "cls" if "class token" in emb else "mean"
        return {"name": "transformers", "params": {"model": entry.model, "model_kwargs": dict(entry.kwargs),
                                                    "pool": pool}}
    raise SpecError(f"--encoder {name}: {entry.title} is loaded by its own package ({entry.package}), which stmm "
                    f"does not bundle; see 'stmm info {name}'")


def _component_ref(slot: str, name: str) -> dict[str, Any] | None:
    if name.strip().lower() in NONE_WORDS:
        return None
    if slot == "image" and not _has(slot, name):  # not a component name: a published encoder of the zoo?
        zoo = zoo_image_component(name)
        if zoo is not None:
            return zoo
    return {"name": name, "params": {}}


def _has(slot: str, name: str) -> bool:
    from stmm_core.plugins import get_catalogue
    from stmm_core.spec import DEFAULT_PIPELINE, family_slots

    kind = family_slots(DEFAULT_PIPELINE).get(slot, (None,))[0]
    return any(i.name == name or name in i.aliases for i in get_catalogue() if i.kind == kind)


def compose_spec(
    recipe: str | None = "stereomm",
    slots: dict[str, str | None] | None = None,
    sets: dict[str, Any] | None = None,
    *,
    warn: Callable[[str], None] | None = None,
):
    """Validated spec: start from *recipe*, replace the named slots, apply ``--set`` overrides.

    A slot named with the component the recipe already uses keeps the recipe's settings. A replaced component
    starts from its own defaults and the spec's ``note`` says the result is not a tuned recipe. Without a recipe,
    the slots not named take stereomm's components at their defaults and the note says so. *warn* receives one
    line when the composed components equal a recipe's but the settings differ (what differs, and the flag
    that gives the tuned recipe)."""
    from stmm_core.recipes import get_recipe
    from stmm_core.spec import apply_overrides, parse_spec

    slots = {k: v for k, v in (slots or {}).items() if v is not None}
    if recipe:
        rec = get_recipe(recipe)
        if rec.get("domains_method"):  # a peer package's recipe: not an stmm pipeline
            from stmm_core.errors import StmmError

            raise StmmError(f"recipe {recipe!r} runs a peer package, not an stmm pipeline: use it in "
                            f"'stmm benchmark domains -p {recipe} …' (pick another recipe for fit/run/compose)")
        data = rec["spec"]
    else:
        base = get_recipe("stereomm")["spec"]
        data = {"pipeline": base.get("pipeline", "graph-fusion"),
                "components": {s: (None if ref is None else {"name": ref["name"], "params": {}})
                               for s, ref in base.get("components", {}).items()}}
    comps = data.setdefault("components", {})
    changed: list[str] = []
    for slot, name in slots.items():
        ref = _component_ref(slot, name)
        old = comps.get(slot)
        if ref is not None and old is not None and ref["name"] == old.get("name") and not ref["params"]:
            continue  # the recipe's own component: its tuned settings stay
        if ref is None and old is None:
            continue
        comps[slot] = ref
        shown = "none" if ref is None else (name if name == ref["name"] else f"{name} ({ref['name']} "
                                                                        f"{ref['params'].get('model', '')})")
        changed.append(f"{slot}={shown}")
    if recipe and changed:
        data["recipe"] = None
        data["note"] = (f"based on recipe {recipe} with {', '.join(changed)} (component defaults for the replaced "
                        "part); not a tuned or measured recipe")
    elif not recipe:
        data["recipe"] = None
        named = ", ".join(f"{s}={n}" for s, n in slots.items()) or "no component named"
        data["note"] = (f"composed from components ({named}; other slots: stereomm's components), every component "
                        "at its own defaults: not a tuned recipe (start from one with --recipe; "
                        "'stmm list --kind recipe')")
    apply_overrides(data, sets or {})
    spec = parse_spec(data)
    if warn is not None and (changed or not recipe):
        line = recipe_mismatch(spec)
        if line:
            warn(line)
    return spec


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def recipe_mismatch(spec) -> str | None:
    """One line when *spec*'s components are exactly a recipe's but its settings differ, else ``None``."""
    from stmm_core.recipes import all_recipes
    from stmm_core.spec import parse_spec

    names = {s: (None if r is None else r.name) for s, r in spec.components.items()}
    mine = spec.to_dict()
    for rname, rec in sorted(all_recipes().items()):
        try:
            theirs = parse_spec(copy.deepcopy(rec["spec"]))
        except Exception:  # noqa: BLE001 - a broken plug-in recipe is reported elsewhere
            continue
        if theirs.pipeline != spec.pipeline:
            continue
        if {s: (None if r is None else r.name) for s, r in theirs.components.items()} != names:
            continue
        a, b = _flat({k: mine[k] for k in ("components", *_SETTINGS) if k in mine}), \
            _flat({k: theirs.to_dict()[k] for k in ("components", *_SETTINGS)})
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k != "train.seed"]
        if not diff:
            return None
        shown = "; ".join(f"{k.replace('components.', '').replace('.params.', '.')} {a.get(k)!r} "
                          f"(recipe: {b.get(k)!r})" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        return (f"these are the components of recipe {rname!r} but not its tuned settings: {shown}{more}; "
                f"for the recipe use 'stmm compose --recipe {rname}' (then --set to change one setting)")
    return None
