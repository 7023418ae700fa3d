"""Keep local paths out of files that travel with a pipeline (``metrics.json`` is pushed to the Hub with it)."""

from __future__ import annotations

import re
from typing import Any

# an absolute POSIX path (not the path part of a URL) or a Windows drive path, up to a separator-free last part
_ABS_PATH = re.compile(r"(?<![\w/.])(?:~|[A-Za-z]:)?[/\\](?:[^\s;'\",/\\]+[/\\])*([^\s;'\",/\\]+)")


def scrub_paths(value: Any) -> Any:
    """*value* (JSON-like) with every absolute local path in its strings replaced by ``<local>/<file name>``."""
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: f"<local>/{m.group(1)}", value)
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(v) for v in value]
    return value
