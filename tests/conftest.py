"""Shared fixtures: the shared-data location, a CLI runner in a subprocess, plug-in environments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported by any test module

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_PLUGIN = ROOT / "examples" / "stmm-plugin-example"

os.environ.setdefault("STMM_PROGRESS", "0")


def shared_data_dir() -> Path:
    return Path(os.environ.get("STMM_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real datasets; tests using it skip cleanly when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set STMM_DATA)")
    return path


@pytest.fixture
def single_torch_thread():
    """Tiny problems: one torch thread is faster and immune to OpenMP oversubscription on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "stmm-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _dist_info(site: Path, name: str, entry_points: str) -> None:
    d = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (d / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    """A site folder with the example plug-in and a broken one, discoverable through entry points."""
    site = tmp_path / "site"
    site.mkdir()
    _dist_info(site, "stmm-example-plugin", "[stmm]\nexample = stmm_example_plugin.plugin\n")
    _dist_info(site, "stmm-broken-plugin", "[stmm]\nbroken = stmm_broken_plugin\n")
    return site


def run_stmm(args: list[str], extra_path: list[Path] | None = None, env: dict[str, str] | None = None,
             cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m stmm_core ARGS`` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    paths = [str(p) for p in (extra_path or [])]
    if paths:
        full_env["PYTHONPATH"] = os.pathsep.join(paths + [full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "stmm_core", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def plugin_path(plugin_site) -> list[Path]:
    return [plugin_site, EXAMPLE_PLUGIN, FIXTURES / "broken_plugin"]


@pytest.fixture
def synthetic_h5ad(tmp_path) -> Path:
    """A small synthetic section with an image, written as .h5ad (obs['domain'] = truth)."""
    from stmm_core.testing.synthetic import make_synthetic_adata

    path = tmp_path / "synthetic.h5ad"
    make_synthetic_adata(n_spots=400, n_genes=120, n_domains=4, seed=1).write_h5ad(path)
    return path
