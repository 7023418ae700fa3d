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
