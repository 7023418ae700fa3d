"""The core names no bundled plug-in: no module under stmm_core/ imports a bundled plug-in package or the recipe
registry, at module level or lazily inside a function (the AST of every module is walked, so an import that
only runs on some code path is found too). Bundled packages are found through the ``stmm`` entry points, like
third-party ones."""

from __future__ import annotations

import ast
from pathlib import Path

import stmm_core

BUNDLED = {"stmm_vision", "stmm_genes", "stmm_fusion", "stmm_graph", "stmm_tasks", "stmm_magic", "stmm_baselines",
           "stmm_graph_fusion", "stmm_peers", "stmm_registry", "registry"}
CORE = Path(stmm_core.__file__).parent


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level module)`` of every import statement and ``importlib.import_module("…")`` /
    ``__import__("…")`` call with a literal name."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value.split(".")[0]))
    return out


def violations(root: Path = CORE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, mod in _imports(tree):
            if mod in BUNDLED:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {mod}")
    return found


def test_core_imports_no_bundled_plugin():
    bad = violations()
    assert not bad, "stmm_core must not import bundled plug-ins:\n" + "\n".join(bad)


def test_the_walker_finds_lazy_and_dynamic_imports(tmp_path):
    pkg = tmp_path / "stmm_core"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from stmm_magic.pipeline import fit_magic\n")
    (pkg / "b.py").write_text("import importlib\nx = importlib.import_module('stmm_graph.vgae')\n")
    (pkg / "c.py").write_text("import stmm_core.spec\nfrom . import b\n")
    assert violations(pkg) == ["stmm_core/a.py:2 imports stmm_magic", "stmm_core/b.py:2 imports stmm_graph"]
