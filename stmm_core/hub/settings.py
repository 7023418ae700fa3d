"""Hub settings read at call time (``huggingface_hub`` reads its environment only once, at import).

Tokens are taken from ``HF_TOKEN`` (or the token ``huggingface-cli login`` stored) and are never printed,
logged or written into a pipeline folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "on", "yes", "true", "y"}
_HEX40 = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub is, where its cache lives, whether to go online, and the token (never shown)."""

    endpoint: str
    cache_dir: str
    offline: bool
    token: str | None

    def __repr__(self) -> str:  # the token stays out of reprs, logs and tracebacks
        return (f"HubSettings(endpoint={self.endpoint!r}, cache_dir={self.cache_dir!r}, offline={self.offline}, "
                f"token={'set' if self.token else None})")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def hub_settings(offline: bool | None = None) -> HubSettings:
    """Current settings: ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
        cache = str(Path(home).expanduser() / "hub")
    if offline is None:
        offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    return HubSettings(endpoint=endpoint, cache_dir=str(Path(cache).expanduser()), offline=bool(offline),
                       token=token)


def is_commit(revision: str | None) -> bool:
    """True for a full 40-hex commit id (the only revision that cannot move)."""
    return bool(revision) and bool(_HEX40.fullmatch(revision or ""))


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``org/name[@rev]`` (optionally prefixed ``hf:`` or ``hf-hub:``) → ``(repo_id, revision or None)``."""
    from stmm_core.errors import StmmError

    text = ref.strip()
    for prefix in ("hf://", "hf:", "hf-hub:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    repo, at, rev = text.partition("@")
    if not _REPO.fullmatch(repo) or (at and not rev.strip()):
        raise StmmError(f"{ref!r} is not a Hub repository name; expected org/name or org/name@revision")
    return repo, rev or None


def looks_like_hub_ref(text: str) -> bool:
    """True when *text* names a Hub repo (``hf:org/name[@rev]``) rather than a local path."""
    return text.startswith(("hf:", "hf://", "hf-hub:"))
