"""Reproducibility: one call seeds python, numpy and torch and makes CPU kernels deterministic."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int) -> None:
    """Seed every RNG stmm uses. On CPU the same seed gives the same embedding."""
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode would also NaN-fill every fresh tensor (~15 % of a training step on CPU); results
    # do not depend on uninitialised memory, so that debugging aid is turned off.
    torch.utils.deterministic.fill_uninitialized_memory = False


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    from stmm_core.errors import StmmError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StmmError("--device cuda was requested but no CUDA GPU is visible; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise StmmError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads from *threads* or ``STMM_THREADS`` (default: torch's own choice).

    On an oversubscribed machine (other busy processes) fewer threads can be several times faster.
    """
    import torch

    from stmm_core.errors import StmmError

    if threads is None:
        env = os.environ.get("STMM_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise StmmError(f"STMM_THREADS={env!r} is not a whole number") from None
    if threads is not None:
        if threads < 1:
            raise StmmError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()
