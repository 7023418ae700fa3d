"""``import stmm_core``, ``stmm --help`` and ``stmm list`` never import the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "torch_geometric", "timm", "scanpy", "transformers", "sklearn", "anndata", "torchvision"]

PROBE = """
import sys
{body}
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def _probe(body: str) -> str:
    code = PROBE.format(body=body, heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("HEAVY=")][-1]
    return line.removeprefix("HEAVY=")


def test_import_is_light():
    assert _probe("import stmm_core, stmm_core.spec, stmm_core.catalogue, stmm_core.plugins") == ""


def test_help_is_light():
    body = "from stmm_core.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _probe(body) == ""


def test_list_and_plugins_are_light():
    body = "from stmm_core.cli.main import main\nmain(['list'])\nmain(['plugins'])\nmain(['compose', '--dry-run'])"
    assert _probe(body) == ""
