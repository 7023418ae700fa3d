"""stmm's environment variables, each validated where it is read: a bad value is one message naming the
variable and what it accepts (never a raw ``ValueError`` deep inside a run)."""

from __future__ import annotations

import os
from pathlib import Path

from stmm_core.errors import StmmError


def env_int(name: str, minimum: int = 0) -> int | None:
    """``int(os.environ[name])`` (≥ *minimum*), ``None`` when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise StmmError(f"{name}={text!r} is not a whole number; set it to an integer ≥ {minimum} or unset it") from None
    if value < minimum:
        raise StmmError(f"{name}={value} must be at least {minimum}; set it to an integer ≥ {minimum} or unset it")
    return value


def env_dir(name: str, *, fallback: str | None = None) -> Path | None:
    """A folder named by *name* (created later by its user): refused when a file stands at, or above, that place."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    p = Path(text).expanduser()
    if p.exists() and not p.is_dir():
        tail = f", or {fallback}" if fallback else ""
        raise StmmError(f"{name}={text} is a file, not a folder; set it to a folder or unset it{tail}")
    parent = p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent != p and not parent.is_dir():
        raise StmmError(f"{name}={text}: {parent} is a file, so the folder cannot be created; set it to a folder")
    return p


def check_environment() -> None:
    """Validate every stmm variable that is set, before a command does any work (the CLI calls it first)."""
    env_int("STMM_THREADS", minimum=1)
    env_int("STMM_TILE_WORKERS", minimum=0)
    env_dir("STMM_CACHE_DIR", fallback="pass --no-cache")
    text = os.environ.get("STMM_PROGRESS", "").strip()
    if text and text not in ("0", "1"):
        raise StmmError(f"STMM_PROGRESS={text!r}: use 0 (no progress bars) or 1, or unset it")
