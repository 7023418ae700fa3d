"""Magic run folders are saved pipelines like any family's: `stmm fit SPEC` (several sections) writes a card and a
manifest; `stmm push` uploads it to the loopback Hub; `stmm pull org/name@commit` verifies it into an empty cache;
`stmm predict hf:org/name@commit` in a fresh process reproduces the fit's own predictions bit for bit."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

from conftest import run_stmm
from magic_tiny import TINY_MODEL, write_sections

pytest.importorskip("torch")

TINY = TINY_MODEL + ["--set", "train.stage1.epochs=1", "--set", "train.stage1.batch_size=16",
                     "--set", "train.stage2.epochs=1", "--set", "train.stage2.batch_size=16", "-q"]


@pytest.fixture(scope="module")
def magic_run(tmp_path_factory):
    from stmm_core.cli.compose_cmd import compose_spec

    root = tmp_path_factory.mktemp("magic-hub")
    paths = write_sections(root)
    spec = root / "magic.json"
    spec.write_text(compose_spec("magic", None, {}).pretty_json())
    env = {"STMM_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1", "STMM_THREADS": "1"}
    # 'stmm fit SPEC' fits any family: a magic spec on two sections
    r = run_stmm(["fit", str(spec), "--data", str(paths[0]), str(paths[1]), "-o", str(root / "run"), *TINY], env=env)
    assert r.returncode == 0, r.stderr
    assert "magic: 2 training section(s)" in r.stdout
    r = run_stmm(["predict", str(root / "run"), "--data", str(paths[2]), "-o", str(root / "local.h5ad")], env=env)
    assert r.returncode == 0, r.stderr
    return root, paths, env


def test_magic_run_folder_is_a_saved_pipeline(magic_run):
    from stmm_core.hub.pipeline_dir import load_pipeline

    root, paths, _ = magic_run
    run = root / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["pipeline"] == "magic"
    assert {"spec.json", "magic.json", "stage1.safetensors", "stage2.safetensors", "metrics.json",
            "README.md"} <= set(manifest["files"])
    loaded = load_pipeline(run)  # every file re-hashed, spec re-validated
    assert loaded.spec.pipeline == "magic" and loaded.state_dict == {}
    for name in ("magic.json", "metrics.json"):  # no local paths travel with the pipeline
        assert str(root) not in (run / name).read_text()
    assert "magic" in (run / "README.md").read_text()


def test_push_pull_by_commit_and_predict_hf_bit_for_bit(magic_run, hub_server, tmp_path):
    root, paths, env = magic_run
    pusher = {**env, **hub_server.client_env(tmp_path / "pusher")}
    r = run_stmm(["push", str(root / "run"), "lab/tiny-magic"], env=pusher)
    assert r.returncode == 0, r.stderr
    commit = r.stdout.strip().rsplit("@", 1)[1]
    assert commit == hub_server.repos["lab/tiny-magic"].branches["main"]
    assert "stage2.safetensors" in hub_server.files("lab/tiny-magic")

    user = {**env, **hub_server.client_env(tmp_path / "user", token=False)}
    r = run_stmm(["pull", f"lab/tiny-magic@{commit}"], env=user)
    assert r.returncode == 0, r.stderr
    assert f"lab/tiny-magic@{commit} verified" in r.stdout
    out = tmp_path / "hf.h5ad"
    r = run_stmm(["predict", f"hf:lab/tiny-magic@{commit}", "--data", str(paths[2]), "-o", str(out)], env=user)
    assert r.returncode == 0, r.stderr
    assert f"lab/tiny-magic@{commit}" in r.stdout
    ref = ad.read_h5ad(root / "local.h5ad")
    got = ad.read_h5ad(out)
    assert list(got.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(got.X, ref.X)  # bit for bit, fresh processes


def test_pull_refuses_a_corrupted_stage_file(magic_run, tmp_path):
    import shutil

    from stmm_core.hub.manifest import HubIntegrityError
    from stmm_core.hub.pipeline_dir import load_pipeline

    root, _, _ = magic_run
    copy = tmp_path / "copy"
    shutil.copytree(root / "run", copy)
    data = bytearray((copy / "stage2.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "stage2.safetensors").write_bytes(bytes(data))
    with pytest.raises(HubIntegrityError, match="stage2.safetensors"):
        load_pipeline(copy)


def test_a_magic_run_folder_of_0_1_0_still_predicts_and_push_says_how_to_migrate(magic_run, tmp_path, monkeypatch):
    import shutil

    from stmm_core.cli.main import main

    root, paths, env = magic_run
    old = tmp_path / "old"
    shutil.copytree(root / "run", old)
    for name in ("manifest.json", "README.md", "metrics.json"):  # what stmm 0.1.0 did not write
        (old / name).unlink()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "old.h5ad"
    assert main(["predict", str(old), "--data", str(paths[2]), "-o", str(out)]) == 0
    np.testing.assert_allclose(ad.read_h5ad(out).X, ad.read_h5ad(root / "local.h5ad").X, rtol=1e-5, atol=1e-6)
    from stmm_core.hub.manifest import HubIntegrityError
    from stmm_core.hub.pipeline_dir import load_pipeline

    with pytest.raises(HubIntegrityError, match=r"stmm 0\.1\.0.*fit its spec.json again"):
        load_pipeline(old)  # what 'stmm push' verifies first
