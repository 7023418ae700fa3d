"""User-facing errors.

Every error a user can cause (bad file, wrong column, unknown component, missing optional dependency…)
is raised as a :class:`StmmError` subclass whose message says what is wrong *and what to do*. The CLI
prints the message on one line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class StmmError(Exception):
    """Base class of errors a user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class DataError(StmmError):
    """Input data is unreadable, inconsistent or out of range."""


class MissingGenesError(DataError):
    """A section lacks genes a trained model needs (``stmm evaluate`` offers ``--allow-missing-genes``)."""


class SpecError(StmmError):
    """A pipeline spec is invalid (unknown key, bad parameter, newer format)."""


class ComponentNotFound(StmmError):
    """A component name is not in the catalogue."""


class MissingDependency(StmmError):
    """An optional dependency needed for the requested feature is not installed."""


class WeightsUnavailable(StmmError):
    """Pretrained weights were requested but cannot be obtained."""


def require(module: str, feature: str, extra: str | None = None):
    """Import *module* or raise :class:`MissingDependency` telling how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through tests with a fake module
        hint = f"pip install 'stmm[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingDependency(
            f"{feature} needs the optional package '{module.split('.')[0]}' ({exc}); install it with: {hint}"
        ) from None
