"""Fault injection: a fit killed with SIGTERM or SIGKILL while reading, encoding images, training or writing never
leaves a complete-looking result, and the next run into the same place succeeds (removing what the killed run
staged).

``STMM_FAULT_AT`` (see :mod:`stmm_core.faults`) makes the fit signal itself at a named point, so each kill lands
at a known stage. SIGTERM is handled by stmm (it unwinds and removes its stage), so it runs in-process; SIGKILL
cannot be handled, so those fits run as ``stmm`` processes, all started at once. (Forking the test process is
not an option: numba's OpenMP layer terminates a child forked after it started.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stmm_core.cli.main import main

pytestmark = [pytest.mark.filterwarnings("ignore"),
              pytest.mark.skipif(os.name != "posix", reason="POSIX signals")]

POINTS = ("read", "encode", "train", "write")
COMPLETE = ("result.h5ad", "metrics.json", "spec.json", "model.safetensors", "manifest.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.testing.synthetic import make_synthetic_adata

    root = tmp_path_factory.mktemp("faults")
    spec = compose_spec("stereomm", {"image": "stain-stats"},
                        {"train.epochs": 2, "gene.n_top_genes": 30, "gene.pca": 10, "task.n_init": 1})
    (root / "spec.json").write_text(spec.pretty_json())
    make_synthetic_adata(n_spots=64, n_genes=40, n_domains=3, seed=0).write_h5ad(root / "s.h5ad")
    return root


@pytest.fixture(autouse=True)
def _env(setup, monkeypatch):
    monkeypatch.setenv("STMM_PROGRESS", "0")
    monkeypatch.setenv("STMM_CACHE_DIR", str(setup / "cache"))


def _args(root: Path, out: Path) -> list[str]:
    # --no-cache: every run encodes the image again, so the 'encode' point is reached each time
    return ["fit", str(root / "spec.json"), "--data", str(root / "s.h5ad"), "-o", str(out), "-k", "3", "-q",
            "--no-cache"]


def _assert_nothing_complete(out: Path) -> None:
    assert not out.exists() or not any((out / f).exists() for f in COMPLETE), sorted(os.listdir(out))


def _rerun_succeeds(root: Path, out: Path) -> None:
    assert main(_args(root, out)) == 0
    assert all((out / f).is_file() for f in COMPLETE)
    assert not list(out.parent.glob(f".stmm-partial-{out.name}.*")) and not list(out.glob(".stmm-partial-*"))


@pytest.mark.parametrize("point", POINTS)
def test_sigterm(setup, tmp_path, monkeypatch, capsys, point):
    out = tmp_path / "run"
    monkeypatch.setenv("STMM_FAULT_AT", point)
    monkeypatch.setenv("STMM_FAULT_SIGNAL", "TERM")
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = main(_args(setup, out))
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert rc == 143 and "stmm: terminated" in err and "Traceback" not in err
    _assert_nothing_complete(out)
    assert not list(tmp_path.glob(".stmm-partial-*")), "SIGTERM must remove the stage on the way out"
    if point == "write":
        monkeypatch.delenv("STMM_FAULT_AT")
        _rerun_succeeds(setup, out)


def test_sigkill_at_every_point(setup, tmp_path):
    """SIGKILL cannot be handled: each fit runs in its own ``stmm`` process (all at once, to share the start-up
    time), killed at its point; the one killed while writing was replacing an earlier run (--overwrite)."""
    import subprocess
    import sys

    from stmm_core.faults import point  # noqa: F401 - the processes import it

    old = tmp_path / "old"
    assert main(_args(setup, old)) == 0
    before = (old / "metrics.json").read_bytes()
    jobs = {p: (tmp_path / p, []) for p in POINTS if p != "write"}
    jobs["write"] = (old, ["--overwrite"])
    procs = {}
    for name, (out, extra) in jobs.items():
        env = {**os.environ, "STMM_FAULT_AT": name,
               "STMM_FAULT_SIGNAL": "KILL", "STMM_THREADS": "1"}
        procs[name] = subprocess.Popen([sys.executable, "-m", "stmm_core", *_args(setup, out), *extra], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (name, proc.returncode, err[-2000:])
    for name in ("read", "encode", "train"):
        _assert_nothing_complete(tmp_path / name)
    # killed mid-write: the stage is left beside the target, never under its name; the earlier run is intact
    assert list(tmp_path.glob(".stmm-partial-old.*"))
    assert (old / "metrics.json").read_bytes() == before and all((old / f).is_file() for f in COMPLETE)
    _rerun_succeeds(setup, tmp_path / "train")  # the next run into the same place succeeds
    assert main([*_args(setup, old), "--overwrite"]) == 0  # … and removes the killed run's stale stage
    assert not list(tmp_path.glob(".stmm-partial-*"))
