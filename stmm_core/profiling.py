"""Wall time and peak resident memory per pipeline stage (sampled RSS; no torch import)."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - non-Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class StageRecord:
    name: str
    seconds: float
    peak_rss_mb: float
    start_rss_mb: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


@dataclass
class StageProfiler:
    """``with prof.stage("graph"): ...`` records wall time and the peak RSS seen during the stage."""

    interval: float = 0.02
    records: list[StageRecord] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start_rss = current_rss_bytes()
        peak = [start_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], current_rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            stop.set()
            thread.join()
            peak[0] = max(peak[0], current_rss_bytes())
            self.records.append(StageRecord(name, seconds, peak[0] / 2**20, start_rss / 2**20))

    def to_list(self) -> list[dict[str, float | str]]:
        return [r.to_dict() for r in self.records]

    def table(self) -> str:
        lines = [f"{'stage':<16}{'seconds':>10}{'peak RSS MB':>14}"]
        for r in self.records:
            lines.append(f"{r.name:<16}{r.seconds:>10.2f}{r.peak_rss_mb:>14.0f}")
        return "\n".join(lines)
