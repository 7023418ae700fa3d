"""Fault injection for tests: ``STMM_FAULT_AT=<point>`` makes the process send itself a signal there.

Named points of a fit: ``read`` (section read), ``encode`` (image features computed), ``train`` (first training
epoch done), ``write`` (run folder half-written). ``STMM_FAULT_SIGNAL`` is ``KILL`` (default) or ``TERM``. The
bad-input test suite uses it to check that a killed run never leaves a complete-looking result; unset, a
:func:`point` costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Deliver the configured signal to this process when ``STMM_FAULT_AT`` names *name*."""
    if os.environ.get("STMM_FAULT_AT") != name:
        return
    sig = os.environ.get("STMM_FAULT_SIGNAL", "KILL").upper().removeprefix("SIG")
    os.kill(os.getpid(), getattr(signal, f"SIG{sig}", signal.SIGKILL))
