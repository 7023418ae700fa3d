"""Reproducibility: one call seeds python, numpy and torch and makes CPU kernels deterministic."""

from __future__ import annotations

import os
import random


#: The intra-op thread count chosen by :func:`configure_threads`, re-applied by :func:`seed_everything`.
_PINNED_THREADS: int | None = None


def seed_everything(seed: int) -> None:
    """Seed every RNG stmm uses and restore the pinned thread count. On CPU, with the same thread count, the same
    seed gives the same embedding bit for bit, in this process or a new one.

    The thread count matters: oneDNN convolutions split their reductions by thread, so 1 and 2 threads give
    features that differ in the last bit (~1e-8), and that difference survives into the embedding. Libraries
    used while fitting the gene features (scikit-learn / scanpy through threadpoolctl, numba) reset the shared
    OpenMP pool to the machine's default, so a fit would encode images with more threads than ``stmm embed``
    (which restores the gene state without those calls) - the whole "differs in a new process" effect.
    Re-applying the count chosen by :func:`configure_threads` before every stage removes it.
    """
    import numpy as np
    import torch

    if _PINNED_THREADS is not None and torch.get_num_threads() != _PINNED_THREADS:
        torch.set_num_threads(_PINNED_THREADS)

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


def _limit_native_pools(threads: int) -> None:
    """Give the BLAS/OpenMP pools of numpy, scipy and scikit-learn the same thread count as torch.

    Without it OpenBLAS starts one spinning thread per core for every PCA/GMM call; on a busy machine that made
    a 20-restart Gaussian mixture on 3,460 spots take minutes of CPU instead of seconds.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return
    threadpool_limits(limits=threads)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads from *threads* or ``STMM_THREADS`` (default: torch's own choice) and pin it:
    :func:`seed_everything` restores it before each stage when a library has changed it in between.

    On an oversubscribed machine (other busy processes) fewer threads can be several times faster. Bit-for-bit
    reproduction of an embedding needs the same count as the fit (``metrics.json`` records it as ``threads``).
    """
    import torch

    from stmm_core.errors import StmmError

    if threads is None:
        from stmm_core.env import env_int

        threads = env_int("STMM_THREADS", minimum=1)
    if threads is not None:
        if threads < 1:
            raise StmmError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        _limit_native_pools(threads)
    global _PINNED_THREADS
    _PINNED_THREADS = torch.get_num_threads()  # kept for every later stage (see seed_everything)
    return _PINNED_THREADS
