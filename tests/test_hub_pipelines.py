"""Pipelines on a loopback Hugging Face Hub: push, pull pinned into an empty cache, reproduce the embedding bit for
bit, re-use offline, and every way a pull must refuse (corrupted blob, wrong revision, gated repo, pickle file,
uninstalled component). The real ``huggingface_hub`` client code runs against :mod:`stmm_core.testing.hub_server`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from stmm_core.errors import ComponentNotFound, StmmError
from stmm_core.hub.manifest import HubIntegrityError, build_manifest, write_manifest
from stmm_core.hub.pipeline_dir import load_pipeline
from stmm_core.hub.remote import HubAccessError, pull, push

from conftest import run_stmm

TINY = {"image.weights": "random", "image.model": "test_resnet", "train.epochs": 5, "gene.n_top_genes": 50,
        "gene.pca": 10, "graph.hidden": [16], "graph.latent": 8, "features.image_pca": 8, "fusion.dim": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny StereoMM-shaped pipeline fitted on a synthetic section: (section .h5ad, run folder)."""
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.testing.synthetic import make_synthetic_adata

    root = tmp_path_factory.mktemp("trained")
    data = root / "section.h5ad"
    make_synthetic_adata(n_spots=200, n_genes=80, n_domains=3, seed=2).write_h5ad(data)
    spec = root / "spec.json"
    spec.write_text(compose_spec("stereomm", None, TINY).pretty_json())
    # Fitted by the CLI in a fresh process, as a user would: 'stmm embed' in another fresh process (same thread
    # count) must reproduce it bit for bit. A fit inside this test process would not be a valid reference: which
    # OpenMP/BLAS runtime torch's kernels use depends on the import order of the whole test session (e.g.
    # sklearn imported before torch), which moves results by ~1e-7.
    r = run_stmm(["fit", str(spec), "--data", str(data), "-o", str(root / "run"), "-k", "3", "-q", "--no-cache"])
    assert r.returncode == 0, r.stderr
    return data, root / "run"


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_run_folder_is_a_verified_pipeline(trained):
    _, run = trained
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"spec.json", "model.safetensors", "preprocess.json", "README.md"} <= set(manifest["files"])
    assert "result.h5ad" not in manifest["files"]  # the data is not part of the pipeline
    assert manifest["plugins"] and manifest["components"]["graph"]["name"] == "vgae"
    loaded = load_pipeline(run)
    assert set(k.split(".")[0] for k in loaded.state_dict) == {"fusion", "graph"}
    card = (run / "README.md").read_text()
    from stmm_core.hub.card import read_front_matter

    meta = read_front_matter(card)
    assert meta["library_name"] == "stmm" and "stmm" in meta["tags"] and meta["license"]
    assert meta["stmm"]["spec_hash"] == loaded.spec.hash()
    assert "stmm pull" in card and "stmm embed" in card


def test_push_pull_by_commit_reproduces_the_embedding_bit_for_bit(trained, hub_server, tmp_path, monkeypatch):
    """CLI end to end (fresh processes): push, pull by commit into an empty cache, embed, compare; then again
    offline from that cache (in this process)."""
    data, run = trained
    env = hub_server.client_env(tmp_path / "pusher")
    r = run_stmm(["push", str(run), "lab/tiny-stereomm", "--license", "cc-by-4.0"], env=env)
    assert r.returncode == 0, r.stderr
    assert hub_server.token not in r.stdout + r.stderr
    commit = r.stdout.strip().rsplit("@", 1)[1]
    assert len(commit) == 40 and commit == hub_server.repos["lab/tiny-stereomm"].branches["main"]
    pushed = hub_server.files("lab/tiny-stereomm")
    assert "license: cc-by-4.0" in pushed["README.md"].decode() and "result.h5ad" not in pushed
    metrics = pushed["metrics.json"].decode()  # no local paths travel with the pipeline
    assert str(data.parent) not in metrics and json.loads(metrics)["data"] == "<local>/section.h5ad"

    user = hub_server.client_env(tmp_path / "user", token=False)  # empty cache, no token
    r = run_stmm(["pull", f"lab/tiny-stereomm@{commit}", "-o", str(tmp_path / "pulled")], env=user)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr  # pinned: no warning
    record = json.loads((tmp_path / "pulled" / "pulled.json").read_text())
    assert record["commit"] == commit and record["repo"] == "lab/tiny-stereomm"

    r = run_stmm(["embed", str(tmp_path / "pulled"), "--data", str(data), "-o", str(tmp_path / "e.h5ad"), "-q"],
                 env=user)
    assert r.returncode == 0, r.stderr
    reference = ad.read_h5ad(run / "result.h5ad").obsm["X_stmm"]
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "e.h5ad").obsm["X_stmm"], reference)

    from huggingface_hub import constants

    from stmm_core.cli.hub_cmd import resolve_pipeline
    from stmm_graph_fusion.embed import embed_section
    from stmm_core.pipeline.run import load_section

    hub_server.activate(monkeypatch, tmp_path / "user", token=False)  # the cache the CLI pull filled
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    n_requests = len(hub_server.requests)
    loaded, source, _ = resolve_pipeline(f"hf:lab/tiny-stereomm@{commit}")
    assert source == f"lab/tiny-stereomm@{commit}" and len(hub_server.requests) == n_requests  # cache alone
    emb, _ = embed_section(loaded, load_section(data))
    # bit for bit is asserted above between fresh processes; inside this test session torch's CPU kernels depend
    # on which OpenMP/BLAS runtime the session's imports loaded first (e.g. sklearn before torch): ~1e-7 apart
    np.testing.assert_allclose(emb, reference, rtol=1e-5, atol=1e-6)


def test_unpinned_pull_warns_and_records_the_commit(trained, hub_client, tmp_path):
    hub = hub_client.server
    out = push(trained[1], "lab/p")
    warnings: list[str] = []
    res = pull("lab/p", tmp_path / "x", warn=warnings.append)
    assert res.commit == out["commit"] and not res.pinned
    assert len(warnings) == 1 and out["commit"] in warnings[0] and "not pinned" in warnings[0]
    assert json.loads((tmp_path / "x" / "pulled.json").read_text())["revision"] == "main"
    # a branch push resolves to its own commit
    dev = push(trained[1], "lab/p", revision="dev")
    assert pull("lab/p@dev", warn=warnings.append).commit == dev["commit"] != out["commit"]
    assert hub.repos["lab/p"].branches["dev"] == dev["commit"]


def test_offline_uses_only_the_cache(trained, hub_client, monkeypatch):
    out = push(trained[1], "lab/off")
    with pytest.raises(HubAccessError, match="not in the local Hub cache"):
        pull(f"lab/off@{out['commit']}", offline=True)
    pull(f"lab/off@{out['commit']}")
    pull("lab/off", warn=lambda m: None)  # online by branch: the cache learns what main points at
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub_client.server.requests)
    res = pull(f"lab/off@{out['commit']}")
    assert res.from_cache and len(hub_client.server.requests) == n
    assert pull("lab/off", warn=lambda m: None).commit == out["commit"]  # refs/main from the cache


def test_corrupted_blob_is_detected(trained, hub_client, tmp_path):
    hub = hub_client.server
    commit = push(trained[1], "lab/c")["commit"]
    res = pull(f"lab/c@{commit}")
    blob = (res.path / "model.safetensors").resolve()  # the cache blob behind the snapshot symlink
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte different: huggingface_hub itself does not notice
    blob.write_bytes(bytes(data))
    with pytest.raises(HubIntegrityError, match="model.safetensors is corrupted"):
        pull(f"lab/c@{commit}")
    # a mirror serving a corrupted file into an empty cache is caught the same way
    hub.tamper("lab/c", "spec.json", hub.files("lab/c")["spec.json"].replace(b'"seed"', b'"sEed"'))
    shutil.rmtree(hub_client.env["HF_HUB_CACHE"])
    with pytest.raises(HubIntegrityError, match="spec.json is corrupted"):
        pull(f"lab/c@{commit}")


def test_wrong_revision_and_missing_repo(trained, hub_client):
    push(trained[1], "lab/r")
    with pytest.raises(HubAccessError, match="revision 'v9' of lab/r does not exist"):
        pull("lab/r@v9")
    with pytest.raises(HubAccessError, match="revision '0{40}' of lab/r does not exist"):
        pull("lab/r@" + "0" * 40)
    with pytest.raises(HubAccessError, match="repository lab/nothing not found"):
        pull("lab/nothing@main")
    hub_client.server.create_repo("lab/not-stmm", {"config.json": b"{}"})
    with pytest.raises(HubAccessError, match="not an stmm pipeline"):
        pull("lab/not-stmm@main")


def test_gated_repo_without_token(trained, hub_server, tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in trained[1].iterdir()
             if p.name in json.loads((trained[1] / "manifest.json").read_text())["files"] or p.name == "manifest.json"}
    commit = hub_server.create_repo("lab/gated", files, gated=True)
    env = hub_server.client_env(tmp_path / "anon", token=False)
    r = run_stmm(["pull", f"lab/gated@{commit}"], env=env)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "gated" in err and "request access" in err and "HF_TOKEN" in err

    # a token without access: same advice; the token never appears (in this process from here on)
    other = "hf_someone_elses_token"
    hub_server.access[other] = set()
    hub_server.activate(monkeypatch, tmp_path / "anon")
    monkeypatch.setenv("HF_TOKEN", other)
    with pytest.raises(HubAccessError, match="request access") as err:
        pull(f"lab/gated@{commit}")
    assert other not in str(err.value)
    hub_server.grant(other, "lab/gated")
    warnings: list[str] = []
    res = pull(f"lab/gated@{commit}", warn=warnings.append)
    assert res.commit == commit and not any(other in w for w in warnings)


def test_pickle_files_are_refused_unless_allowed(trained, hub_client, tmp_path):
    folder = _copy(trained[1], tmp_path / "with-pickle")
    (folder / "extra.bin").write_bytes(b"\x80\x04not really a pickle")
    manifest = json.loads((folder / "manifest.json").read_text())
    loaded = load_pipeline(trained[1])
    files = sorted(manifest["files"]) + ["extra.bin"]
    write_manifest(folder, build_manifest(folder, loaded.spec, files=files))
    with pytest.raises(StmmError, match=r"pickle files \(extra.bin\)"):
        load_pipeline(folder)
    assert load_pipeline(folder, allow_pickle=True).spec == loaded.spec
    hub = hub_client.server
    commit = hub.create_repo("lab/pkl", {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    with pytest.raises(StmmError, match="not downloaded.*--allow-pickle"):
        pull(f"lab/pkl@{commit}")
    assert not any(("resolve" in p and p.endswith("extra.bin")) for _, p in hub.requests)
    res = pull(f"lab/pkl@{commit}", allow_pickle=True)
    assert (res.path / "extra.bin").is_file()


def test_uninstalled_component_names_its_package(trained, tmp_path):
    folder = _copy(trained[1], tmp_path / "needs-plugin")
    spec = json.loads((folder / "spec.json").read_text())
    spec["components"]["graph"]["name"] = "hyper-gnn"
    (folder / "spec.json").write_text(json.dumps(spec))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["components"]["graph"] = {"kind": "graph_model", "name": "hyper-gnn", "package": "stmm-hypergraph",
                                       "version": "1.2.0"}
    manifest["files"]["spec.json"]["sha256"] = __import__("hashlib").sha256((folder / "spec.json").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ComponentNotFound) as err:
        load_pipeline(folder)
    msg = str(err.value)
    assert "hyper-gnn" in msg and "pip install 'stmm-hypergraph==1.2.0'" in msg and "Nothing was installed" in msg


def test_uninstalled_family_names_its_package(trained, tmp_path):
    folder = _copy(trained[1], tmp_path / "needs-family")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["family"] == {"name": "graph-fusion", "package": "stmm", "version": manifest["plugins"]["stmm"]}
    spec = json.loads((folder / "spec.json").read_text())
    spec["pipeline"] = "bleep-like"
    (folder / "spec.json").write_text(json.dumps(spec))
    manifest["family"] = {"name": "bleep-like", "package": "stmm-bleep-like", "version": "0.3.0"}
    manifest["files"]["spec.json"]["sha256"] = __import__("hashlib").sha256((folder / "spec.json").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ComponentNotFound) as err:
        load_pipeline(folder)
    msg = str(err.value)
    assert "'bleep-like' pipeline" in msg and "pip install 'stmm-bleep-like==0.3.0'" in msg and "Nothing was" in msg


def test_load_is_strict(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(trained[1], tmp_path / "strict")
    loaded = load_pipeline(folder)
    sd = load_file(str(folder / "model.safetensors"))
    sd["decoder.extra"] = sd[next(iter(sd))].clone()
    save_file(sd, str(folder / "model.safetensors"), metadata={"spec_hash": loaded.spec.hash(), "format": "x"})
    write_manifest(folder, build_manifest(folder, loaded.spec))
    with pytest.raises(HubIntegrityError, match="keys outside the components"):
        load_pipeline(folder)
    save_file(load_file(str(trained[1] / "model.safetensors")), str(folder / "model.safetensors"),
              metadata={"spec_hash": "0" * 64})
    write_manifest(folder, build_manifest(folder, loaded.spec))
    with pytest.raises(HubIntegrityError, match="trained for spec"):
        load_pipeline(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(HubIntegrityError, match="no manifest.json"):
        load_pipeline(folder)


def test_push_needs_a_token(trained, hub_client, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAccessError, match="set HF_TOKEN"):
        push(trained[1], "lab/nope")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    with pytest.raises(HubAccessError) as err:
        push(trained[1], "lab/nope")
    assert "hf_not_a_valid_token" not in str(err.value) and "write access" in str(err.value)
