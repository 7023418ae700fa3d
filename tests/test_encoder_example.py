"""The image-encoder plug-in example (examples/stmm-encoder-example) registers through the 'stmm' entry point
and passes its own test, which runs stmm's conformance check, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "stmm-encoder-example"


def test_encoder_example_passes_its_conformance_test(tmp_path):
    site = tmp_path / "site"
    dist = site / "stmm_encoder_example-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stmm-encoder-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[stmm]\nencoder_example = stmm_encoder_example.plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
           "STMM_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout
    r = subprocess.run([sys.executable, "-m", "stmm_core", "info", "tiny-cnn"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0 and "input_size" in r.stdout, r.stderr
