"""Two CPU processes with gloo (torchrun) give the single-process result: sharded image encoding gathered in
order, and partition-parallel training with summed gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def test_shard_blocks_cover_rows_in_rank_order():
    from stmm_core.distributed.context import launch_command, shard

    blocks = [shard(10, r, 3) for r in range(3)]
    assert blocks[0][0] == 0 and blocks[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert sorted(h - lo for lo, h in blocks) == [3, 3, 4]
    cmd = launch_command(2, ["fit", "spec.json"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-3:] == ["stmm_core", "fit", "spec.json"]


def test_two_gloo_processes_equal_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "STMM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, str(HERE / "dist_worker.py"), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(HERE / "dist_worker.py"), str(tmp_path)], env=env, capture_output=True, text=True,
                           timeout=240)
    assert multi.returncode == 0, multi.stderr[-3000:]
    ref = np.load(tmp_path / "rank0_world1.npz")
    assert int(ref["n_parts"]) >= 3
    for r in (0, 1):
        got = np.load(tmp_path / f"rank{r}_world2.npz")
        np.testing.assert_array_equal(got["feats"], ref["feats"])  # shards gathered in row order
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["emb"], ref["emb"], rtol=1e-4, atol=1e-5)
