"""Run the package's tests from a checkout without installing it: its folder goes on the import path (an installed
copy, if any, is used first)."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("stmm_bleep") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
