"""Progress bars on stderr (tqdm), silent when disabled or not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


class _Null:
    def update(self, n: int = 1) -> None:  # noqa: D401
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass


@contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[object]:
    """A tqdm bar on stderr; ``STMM_PROGRESS=0`` disables it."""
    if not enabled or os.environ.get("STMM_PROGRESS", "1") == "0":
        yield _Null()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
               mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()
