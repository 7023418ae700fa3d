"""Magic stage 1 data-parallel (DistributedDataParallel, two gloo CPU processes) equals one process with the
same global batch; ``stmm run magic --nproc 2`` end to end; a user error under --nproc is one line, exit 2.

Tolerances (float32 throughout). Two processes compute the same sums in a different order (each process's
half of the batch, then DDP's gradient average; GEMMs blocked for 4 rows instead of 8), so values agree to a
few ulp, not bitwise:

* per-step and per-epoch losses: rtol 1e-5 (observed ≤ 5e-7 absolute on losses of ~4-6);
* weights, momentum copies and queue features: atol 2e-6 (observed ≤ 2.4e-7 on weights of order 1; losing
  one process's half batch, a queue entry or a momentum step changes weights by 1e-4 or more);
* the input biases of attention layers (keys): their exact gradient is zero (adding a constant to every key
  logit of a query does not change its softmax), so what they receive is rounding noise that Adam rescales to
  steps of up to lr; compared with atol = lr (observed 4e-5);
* integer state (queue spot ids and pointers, random-feature redraw counters) and validation top-1: equal;
  the two processes hold bit-identical weights (both apply the same averaged gradient).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magic_tiny import TINY_VIT_MODEL as TINY_MODEL, write_sections

pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ATTENTION_INPUT_BIAS = ("qkv.bias", "key.bias", "in_proj_bias")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "STMM_THREADS": "1", "HF_HUB_OFFLINE": "1", "STMM_PROGRESS": "0",
           "STMM_CACHE_DIR": str(tmp_path / "cache")}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "STMM_ERROR_DIR"):
        env.pop(k, None)
    return env


def test_stage1_two_gloo_processes_equal_one_process(tmp_path):
    env = _env(tmp_path)
    single = subprocess.run([sys.executable, str(HERE / "magic_ddp_worker.py"), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(HERE / "magic_ddp_worker.py"), str(tmp_path)], env=env, capture_output=True,
                           text=True, timeout=240)
    assert multi.returncode == 0, multi.stderr[-3000:]
    ref = np.load(tmp_path / "magic_rank0_world1.npz")
    r0, r1 = (np.load(tmp_path / f"magic_rank{r}_world2.npz") for r in (0, 1))
    assert len(ref["step_loss"]) == 8  # 2 epochs × 4 batches of 8 (39 training spots, last batch dropped)
    # each process's loss is its half of the batch, weighted so that the mean over processes is the batch mean
    np.testing.assert_allclose((r0["step_loss"] + r1["step_loss"]) / 2, ref["step_loss"], rtol=1e-5)
    assert not np.allclose(r0["step_loss"], ref["step_loss"], rtol=1e-3)  # the halves really differ
    for key in ("epoch_loss", "epoch_itc", "epoch_itm"):
        np.testing.assert_array_equal(r0[key], r1[key])
        np.testing.assert_allclose(r0[key], ref[key], rtol=1e-5)
    np.testing.assert_array_equal(r0["val_top1"], ref["val_top1"])
    names = [k for k in ref.files if k.startswith("w:")]
    assert any(".image_queue.feats" in k for k in names) and any(k.startswith("w:momentum_image.") for k in names)
    for k in names:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        if ref[k].dtype.kind != "f":
            np.testing.assert_array_equal(r0[k], ref[k], err_msg=k)
        elif k.endswith(ATTENTION_INPUT_BIAS):
            np.testing.assert_allclose(r0[k], ref[k], rtol=0, atol=1e-3, err_msg=k)
        else:
            np.testing.assert_allclose(r0[k], ref[k], rtol=0, atol=2e-6, err_msg=k)


TINY = TINY_MODEL + [
    "--set", "train.stage1.epochs=1", "--set", "train.stage1.batch_size=16", "-q",
]


def test_run_magic_nproc_2_and_user_error_as_one_line(tmp_path):

    env = _env(tmp_path)
    paths = [str(p) for p in write_sections(tmp_path, 2)]
    stmm = [sys.executable, "-m", "stmm_core"]
    run = subprocess.run([*stmm, "run", "magic-vit", "--data", *paths, "-o", str(tmp_path / "run"), "--stage", "1",
                          *TINY, "--nproc", "2"], env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1  # process 0 alone reports
    meta = json.loads((tmp_path / "run" / "magic.json").read_text())
    assert meta["stage1_processes"] == 2 and (tmp_path / "run" / "stage1.safetensors").is_file()

    bad = subprocess.run([*stmm, "run", "magic-vit", "--data", paths[0], str(tmp_path / "missing.h5ad"), "-o",
                          str(tmp_path / "run2"), *TINY, "--nproc", "2"], env=env, capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert bad.returncode == 2, bad.stderr[-3000:]
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("stmm: error: data path not found"), bad.stderr[-3000:]
    assert "missing.h5ad" in lines[0] and not (tmp_path / "run2").exists()
