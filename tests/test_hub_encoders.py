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
    for e in zoo.values():  # a verified entry says where it was confirmed
        assert not (e.verified or e.checked) or e.sources, e.name
    assert zoo["uni2-h"].verified and zoo["uni2-h"].kwargs["mlp_ratio"] == pytest.approx(2.66667 * 2)
    from stmm_core.errors import SpecError
    from stmm_registry.zoo import ZooEncoder

    with pytest.raises(ValueError, match="need the source"):
        ZooEncoder.model_validate({**zoo["uni"].model_dump(), "sources": []})
    # the layer classes named in the zoo resolve through the allow-list only
    import torch

    from stmm_vision.layer_args import resolve_layer_kwargs

    resolved = resolve_layer_kwargs(zoo["virchow2"].kwargs)
    assert resolved["act_layer"] is torch.nn.SiLU and resolved["mlp_layer"].func.__name__ == "GluMlp"
    with pytest.raises(SpecError, match="only from timm.layers, torch.nn"):
        resolve_layer_kwargs({"mlp_layer": "subprocess.Popen"})


def test_list_pretrained_and_info_cli():
    from conftest import run_stmm

    r = run_stmm(["list", "--pretrained"])
    assert r.returncode == 0 and "virchow2" in r.stdout and "gpl-3.0" in r.stdout
    r = run_stmm(["info", "uni", "--json"])
    assert r.returncode == 0 and json.loads(r.stdout)["repo"] == "MahmoodLab/UNI"


@pytest.mark.parametrize("kind,name,params", [
    ("image_encoder", "timm", {"model": "test_resnet"}),
    ("image_encoder", "stain-stats", {}),
    ("gene_encoder", "hvg", {"n_top_genes": 20, "pca": 5}),
    ("fusion", "attention", {}),
    ("graph_builder", "radius", {}),
    ("graph_model", "vgae", {"hidden": [16], "latent": 4}),
    ("graph_model", "contrastive-gae", {"latent": 8, "adjacency": "graphst"}),
    ("task", "kmeans", {}),
])
def test_conformance_of_bundled_components(kind, name, params):
    from stmm_core.testing.conformance import check_component

    report = check_component(kind, name, params)
    assert report.ok, str(report)
    assert "determinism" in report.checks
    assert ("partition" in report.checks) == (kind == "graph_model")  # bundled graph models declare exactness


def test_conformance_skips_kinds_without_a_driver():
    from stmm_core.testing.conformance import check_component

    report = check_component("decoder", "gene-query-decoder")
    assert report.skipped and not report.ok


def _tiny_vit_repo(tmp_path, hub, repo_id, *, registers: int = 0):
    """A tiny random transformers ViT (or DINOv2 with registers) + image-processor config, pushed to *hub*."""
    import torch
    from huggingface_hub import HfApi

    from stmm_core.compat import ensure_torchvision

    ensure_torchvision()  # transformers' torchvision-backed image processors
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig, \
        ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    folder = tmp_path / repo_id.replace("/", "--")
    if registers:
        cfg = Dinov2WithRegistersConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                        image_size=28, patch_size=14, num_register_tokens=registers)
        model = Dinov2WithRegistersModel(cfg).eval()
        proc = BitImageProcessor(size={"shortest_edge": 32}, do_center_crop=True, crop_size={"height": 28, "width": 28},
                                 image_mean=[0.7, 0.6, 0.7], image_std=[0.2, 0.23, 0.18], resample=3)
    else:
        cfg = ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                        image_size=32, patch_size=16)
        model = ViTModel(cfg, add_pooling_layer=False).eval()  # saved without a pooler, like Phikon
        proc = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225], resample=2)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder)).oid
    return model, commit


def test_transformers_model_name_from_the_loopback_hub(hub_client, tmp_path, monkeypatch):
    """A tiny Phikon-layout ViT pushed with save_pretrained files, loaded pinned by commit through
    AutoModel.from_pretrained; preprocessing from its image-processor config; features = a direct forward."""
    import torch

    from stmm_core.errors import WeightsUnavailable
    from stmm_core.plugins import get_catalogue

    hub = hub_client.server
    model, commit = _tiny_vit_repo(tmp_path, hub, "lab/phikon-tiny")
    enc = get_catalogue().get("image_encoder", "transformers").build({"model": "lab/phikon-tiny"})  # unpinned: main
    assert enc.weights_info["commit"] == commit and f"lab/phikon-tiny@{commit}" in enc.identity()
    assert enc.preprocessing.input_size == 32 and enc.preprocessing.interpolation == "bilinear"
    assert enc.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert enc.preprocessing.std == pytest.approx((0.229, 0.224, 0.225))
    assert enc.model.pooler is None and enc.out_dim == 24

    gen = torch.Generator().manual_seed(1)
    tiles = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=gen)
    x = (tiles.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = model(pixel_values=x).last_hidden_state
    got = enc.encode(tiles)
    assert got.shape == (3, 24) and got.dtype == torch.float32
    torch.testing.assert_close(got, direct[:, 0], rtol=0, atol=1e-6)
    mean_enc = get_catalogue().get("image_encoder", "transformers").build(
        {"model": f"lab/phikon-tiny@{commit}", "pool": "mean"})
    torch.testing.assert_close(mean_enc.encode(tiles), direct[:, 1:].mean(1), rtol=0, atol=1e-6)

    # a new commit on main does not move a pinned name; the cache serves it offline
    hub.commit("lab/phikon-tiny", {"README.md": b"# moved\n"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    pinned = get_catalogue().get("image_encoder", "transformers").build({"model": f"lab/phikon-tiny@{commit}"})
    assert len(hub.requests) == n and pinned.identity() == enc.identity()
    torch.testing.assert_close(pinned.encode(tiles), got, rtol=0, atol=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    # a pickled checkpoint only: refused, nothing unpickled
    hub.create_repo("lab/pickled", {"config.json": hub.files("lab/phikon-tiny")["config.json"],
                                    "preprocessor_config.json": hub.files("lab/phikon-tiny")["preprocessor_config.json"],
                                    "pytorch_model.bin": b"\x80\x04junk"})
    with pytest.raises(WeightsUnavailable, match="safetensors weights only"):
        get_catalogue().get("image_encoder", "transformers").build({"model": "lab/pickled"})
    with pytest.raises(WeightsUnavailable, match="revision 'v9'.*does not exist"):
        get_catalogue().get("image_encoder", "transformers").build({"model": "lab/phikon-tiny@v9"})


def test_transformers_registers_and_cls_mean_pooling(hub_client, tmp_path):
    """DINOv2 with register tokens (Phikon-v2 / Virchow-like layout): resize-then-crop becomes the crop size, and
    cls+mean excludes the register tokens."""
    import torch

    from stmm_core.plugins import get_catalogue

    hub = hub_client.server
    model, commit = _tiny_vit_repo(tmp_path, hub, "lab/dino-reg", registers=4)
    enc = get_catalogue().get("image_encoder", "transformers").build(
        {"model": f"lab/dino-reg@{commit}", "pool": "cls+mean"})
    assert enc.preprocessing.input_size == 28 and enc.preprocessing.interpolation == "bicubic"
    assert enc.num_prefix_tokens == 5 and enc.out_dim == 48
    tiles = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    x = (tiles.float() / 255 - torch.tensor([0.7, 0.6, 0.7]).view(1, 3, 1, 1)) / \
        torch.tensor([0.2, 0.23, 0.18]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = model(pixel_values=x).last_hidden_state
    assert h.shape[1] == 1 + 4 + 4
    torch.testing.assert_close(enc.encode(tiles), torch.cat([h[:, 0], h[:, 5:].mean(1)], -1), rtol=0, atol=1e-6)


def test_virchow2_layout_layer_classes_and_cls_mean(hub_client, tmp_path):
    """A tiny ViT with Virchow2's layout (SwiGLUPacked MLP, SiLU, 4 register tokens, no pooling) on the loopback
    Hub: the layer classes are named as dotted paths and resolved from the allow-list; the embedding is the class
    token concatenated with the mean of the patch tokens, register tokens excluded (2 x width)."""
    import torch
    from huggingface_hub import HfApi

    from stmm_core.compat import import_timm
    from stmm_core.errors import SpecError, WeightsUnavailable
    from stmm_vision.encoders import TimmImageEncoder
    from stmm_vision.params import TimmEncoderParams

    timm = import_timm()
    hub = hub_client.server
    torch.manual_seed(0)
    args = {"img_size": 28, "patch_size": 14, "embed_dim": 24, "depth": 2, "num_heads": 2, "init_values": 1e-5,
            "mlp_ratio": 5.3375, "reg_tokens": 4, "global_pool": "", "num_classes": 0, "dynamic_img_size": True}
    model = timm.create_model("vit_huge_patch14_224", pretrained=False, mlp_layer=timm.layers.SwiGLUPacked,
                              act_layer=torch.nn.SiLU, **args).eval()
    folder = tmp_path / "virchow2-tiny"
    for key in ("mlp_layer", "act_layer"):  # classes cannot go into config.json: the model card passes them
        getattr(model, "_model_args", {}).pop(key, None)
    timm.models.save_for_hf(model, str(folder), model_args=args, safe_serialization=True)
    assert "mlp_layer" not in json.loads((folder / "config.json").read_text())["model_args"]
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("lab/virchow2-tiny", exist_ok=True)
    commit = api.upload_folder(repo_id="lab/virchow2-tiny", folder_path=str(folder)).oid

    layers = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}
    enc = TimmImageEncoder(TimmEncoderParams(model=f"hf-hub:lab/virchow2-tiny@{commit}", model_kwargs=layers,
                                             pool="cls+mean", channels_last=False))
    assert enc.out_dim == 48 and enc.num_prefix_tokens == 5 and enc.pool_type == "cls+mean"
    assert "SwiGLUPacked" in enc.identity()
    tiles = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    x = (tiles.float() / 255 - enc._mean) / enc._std
    with torch.no_grad():
        out = model(x)  # (B, 1 + 4 + 4, 24): the model card's recipe
    assert out.shape == (2, 9, 24)
    torch.testing.assert_close(enc.encode(tiles), torch.cat([out[:, 0], out[:, 5:].mean(1)], -1), rtol=0, atol=1e-6)

    with pytest.raises(WeightsUnavailable, match="do not fit"):  # without the layer classes the weights do not load
        TimmImageEncoder(TimmEncoderParams(model=f"hf-hub:lab/virchow2-tiny@{commit}"))
    for bad in ("os.system", "torch.nn.functional.silu", "timm.layers._private", "torch.nn.NotALayer"):
        with pytest.raises(SpecError, match="model_kwargs.act_layer"):
            TimmImageEncoder(TimmEncoderParams(model=f"hf-hub:lab/virchow2-tiny@{commit}",
                                               model_kwargs={"act_layer": bad}))
