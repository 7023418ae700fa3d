"""Readable one-line messages from pydantic validation errors (parameters of specs and components)."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


def describe_errors(errors: Iterable[dict[str, Any]], known: Iterable[str] = (), prefix: str = "") -> str:
    """``"; "``-joined problems: an unknown key becomes ``unknown parameter 'x' (did you mean 'y'?)``, other
    errors ``name: message`` without pydantic's ``Value error,`` prefix. Repeated messages are kept once."""
    known = list(known)
    out: list[str] = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        name = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "(root)")
        if err.get("type") == "extra_forbidden":
            parts = [str(p) for p in err.get("loc", ())] or [loc]
            close = difflib.get_close_matches(parts[-1], known, n=1, cutoff=0.6) if len(parts) == 1 else []
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            line = f"unknown parameter '{prefix}{loc}'{hint}"
        else:
            msg = str(err.get("msg", "invalid value"))
            for noise in ("Value error, ", "Assertion failed, "):
                msg = msg.replace(noise, "")
            line = f"{name}: {msg}"
        if line not in out:
            out.append(line)
    return "; ".join(out)


def _numeric_not_bool(annotation: Any) -> bool:
    """True when a field annotation accepts int/float but not bool (``int``, ``float | None``, …)."""
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _numeric_not_bool(args[0])
    if args and typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_numeric_not_bool(a) for a in args) and bool not in args
    return annotation in (int, float)


def bool_number_problems(model: Any, data: Any, prefix: str = "") -> list[str]:
    """Fields of a pydantic *model* class given ``true``/``false`` where a number is expected (pydantic would
    silently read ``true`` as 1): one ``name: …`` text per field, nested models included."""
    from pydantic import BaseModel

    out: list[str] = []
    if not isinstance(data, dict):
        return out
    for name, field in getattr(model, "model_fields", {}).items():
        if name not in data:
            continue
        value, ann = data[name], field.annotation
        if isinstance(value, bool) and _numeric_not_bool(ann):
            out.append(f"{prefix}{name}: {str(value).lower()} is not a number (give a number, e.g. "
                       f"{field.default if field.default not in (None, ...) else 1})")
        elif isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(bool_number_problems(ann, value, f"{prefix}{name}."))
    return out
