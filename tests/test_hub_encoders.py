"""Encoders by Hub name through the real timm ``hf-hub:`` code path against the loopback Hub, the zoo index, and the
conformance check."""

from __future__ import annotations

import json

import pytest


def test_tiny_uni_layout_vit_from_the_loopback_hub(hub_client, tmp_path):
    """A ViT with UNI's layout (init_values, dynamic_img_size), tiny, pushed and loaded pinned by commit."""
    import torch
    from huggingface_hub import HfApi

    from stmm_core.compat import import_timm
    from stmm_vision.encoders import TimmImageEncoder
    from stmm_vision.params import ViTParams

    timm = import_timm()
    hub = hub_client.server
    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 16, "embed_dim": 24, "depth": 2, "num_heads": 2, "init_values": 1e-5,
            "dynamic_img_size": True, "num_classes": 0}
    model = timm.create_model("vit_large_patch16_224", pretrained=False, **args).eval()
    folder = tmp_path / "uni-tiny"
    timm.models.save_for_hf(model, str(folder), model_args=args, safe_serialization=True)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "vit_large_patch16_224" and cfg["model_args"]["init_values"] == 1e-5
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("lab/uni-tiny", exist_ok=True)
    commit = api.upload_folder(repo_id="lab/uni-tiny", folder_path=str(folder)).oid

    loaded = timm.create_model(f"hf-hub:lab/uni-tiny@{commit}", pretrained=True).eval()  # timm's own hf-hub path
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    enc = TimmImageEncoder(ViTParams(model=f"hf-hub:lab/uni-tiny@{commit}", channels_last=False))
    assert enc.weights_info["commit"] == commit and f"lab/uni-tiny@{commit}" in enc.identity()
    assert enc.preprocessing.mean == pytest.approx(cfg["pretrained_cfg"]["mean"])  # from the model's own config
    assert enc.out_dim == 24
    # unknown revision: one clear message
    from stmm_core.errors import WeightsUnavailable

    with pytest.raises(WeightsUnavailable, match="does not exist"):
        TimmImageEncoder(ViTParams(model="hf-hub:lab/uni-tiny@v404"))
    hub.create_repo("lab/gated-vit", {p.name: p.read_bytes() for p in folder.iterdir()}, gated=True)
    import os

    os.environ.pop("HF_TOKEN", None)
    with pytest.raises(WeightsUnavailable, match="gated.*HF_TOKEN"):
        TimmImageEncoder(ViTParams(model="hf-hub:lab/gated-vit"))


def test_zoo_index_is_valid_and_complete():
    from stmm_registry.zoo import load_zoo

    zoo = {e.name: e for e in load_zoo().encoders}
    for name in ("uni", "uni2-h", "conch", "phikon", "phikon-v2", "h-optimus-0", "virchow2", "prov-gigapath"):
        assert name in zoo and zoo[name].modality == "image"
    assert zoo["virchow2"].embedding_dim == 2560 and zoo["uni"].kwargs["init_values"] == 1e-5
    assert zoo["scbert"].license == "gpl-3.0" and "GPL-3.0" in zoo["scbert"].notes


def test_list_pretrained_and_info_cli():
    from conftest import run_stmm

    r = run_stmm(["list", "--pretrained"])
    assert r.returncode == 0 and "virchow2" in r.stdout and "gpl-3.0" in r.stdout
    r = run_stmm(["info", "uni"])
    assert r.returncode == 0 and json.loads(r.stdout)["repo"] == "MahmoodLab/UNI"


@pytest.mark.parametrize("kind,name,params", [
    ("image_encoder", "timm", {"model": "test_resnet"}),
    ("gene_encoder", "hvg", {"n_top_genes": 20, "pca": 5}),
    ("fusion", "attention", {}),
    ("graph_builder", "radius", {}),
    ("graph_model", "vgae", {"hidden": [16], "latent": 4}),
    ("task", "kmeans", {}),
])
def test_conformance_of_bundled_components(kind, name, params):
    from stmm_core.testing.conformance import check_component

    report = check_component(kind, name, params)
    assert report.ok, str(report)
    assert "determinism" in report.checks


def test_conformance_skips_kinds_without_a_driver():
    from stmm_core.testing.conformance import check_component

    report = check_component("decoder", "gene-query-decoder")
    assert report.skipped and not report.ok
