"""Image encoders (stmm_vision) and the torchvision work-around (stmm_core.compat).

No network: weights are random, made by the tests, or put by the tests into a temporary Hugging Face cache.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from stmm_core.compat import ensure_torchvision, import_timm  # noqa: E402
from stmm_core.errors import DataError, SpecError, WeightsUnavailable  # noqa: E402
from stmm_vision.params import ResNet50Params, TimmEncoderParams, ViTParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
timm = import_timm()
from stmm_vision.encoders import TimmImageEncoder  # noqa: E402


def tiles(n: int = 3, size: int = 64, seed: int = 0) -> "torch.Tensor":
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def reference(model, x, mean, std):
    """Pooled features computed by hand: the encoder must match this."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()((x.float() / 255 - m) / s)


def build(seed: int = 0, **kw) -> TimmImageEncoder:
    torch.manual_seed(seed)
    return TimmImageEncoder(TimmEncoderParams(**kw))


# --------------------------------------------------------------------------------------------------------------
# compat
# --------------------------------------------------------------------------------------------------------------


def test_compat_import_is_light_and_fix_works():
    code = (
        "import sys, stmm_core.compat as c\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules\n"
        "c.install_torchvision_hook()\n"
        "assert 'torch' not in sys.modules\n"
        "import torchvision, torchvision.transforms\n"  # the hook applies the fix first
        "state = c.torchvision_status()\n"
        "assert state in ('native', 'patched'), state\n"
        "assert c.ensure_torchvision() == state\n"
        "import timm; timm.create_model('test_vit')\n"
        "print(state)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_ensure_torchvision_idempotent():
    first = ensure_torchvision()
    assert ensure_torchvision() == first
    assert import_timm() is timm


# --------------------------------------------------------------------------------------------------------------
# random weights: shapes, dtype, determinism, preprocessing from the pretrained config
# --------------------------------------------------------------------------------------------------------------


def test_resnet50_random_features_are_deterministic():
    x = tiles(3, 32)
    torch.manual_seed(0)
    a = TimmImageEncoder(ResNet50Params(weights="random"))
    fa = a.encode(x)
    assert fa.shape == (3, 2048) and fa.dtype == torch.float32 and a.out_dim == 2048
    assert torch.isfinite(fa).all()
    torch.manual_seed(0)
    b = TimmImageEncoder(ResNet50Params(weights="random"))
    assert torch.equal(b.encode(x), fa)
    assert a.identity() == b.identity()
    assert "random(seed=0)" in a.identity() and "resnet50" in a.identity()
    # another seed: other weights, other identity (a small model keeps the test fast)
    s0, s1 = build(0, model="test_resnet", weights="random"), build(1, model="test_resnet", weights="random")
    assert s0.identity() != s1.identity() and "random(seed=1)" in s1.identity()
    assert not torch.equal(s0.encode(x), s1.encode(x))
    # batching does not change the result
    assert torch.allclose(torch.cat([a.encode(x[:1]), a.encode(x[1:])]), fa, atol=1e-5)


def test_tiny_vit_features_and_tokens():
    torch.manual_seed(0)
    enc = TimmImageEncoder(ViTParams(model="vit_tiny_patch16_224", weights="random"))
    x = tiles(2, 224)
    f = enc.encode(x)
    assert f.shape == (2, 192) and f.dtype == torch.float32
    tok = enc.encode_tokens(x)
    assert tok.shape == (2, 1 + 14 * 14, 192) and tok.dtype == torch.float32 and enc.num_prefix_tokens == 1
    # class-token pooling: the pooled feature is the CLS token of the final tokens (head is identity)
    assert torch.allclose(f, tok[:, 0], atol=1e-5)
    assert enc.fixed_input_size and enc.preprocessing.input_size == 224
    torch.manual_seed(0)
    again = TimmImageEncoder(ViTParams(model="vit_tiny_patch16_224", weights="random"))
    assert torch.equal(again.encode(x), f)


@pytest.mark.parametrize("name", ["resnet50", "vit_small_patch16_224", "resnet50.tv_in1k", "test_resnet"])
def test_preprocessing_comes_from_the_pretrained_config(name):
    from timm.data import resolve_model_data_config

    enc = build(model=name, weights="random")
    ref = resolve_model_data_config(timm.create_model(name, pretrained=False))
    pre = enc.preprocessing
    assert pre.mean == tuple(ref["mean"]) and pre.std == tuple(ref["std"])
    assert pre.interpolation == ref["interpolation"]
    assert pre.input_size == ref["input_size"][-1] == enc.max_input_size


def test_features_match_the_model_computed_by_hand():
    torch.manual_seed(3)
    model = timm.create_model("test_resnet")  # the encoder builds the full model, then drops the classifier
    model.reset_classifier(0)
    enc = build(seed=3, model="test_resnet", weights="random")
    x = tiles(4, 64)  # auto: a flexible model is fed the tile at its own size (no resize)
    ref = reference(model, x, enc.preprocessing.mean, enc.preprocessing.std)
    assert torch.allclose(enc.encode(x), ref, atol=1e-5)


def test_input_size_rules():
    auto = build(model="test_resnet", weights="random")
    assert auto.max_input_size == 160 and not auto.fixed_input_size
    assert auto._side(64, 64) == 64 and auto._side(16, 16) == auto.min_input_size and auto._side(400, 400) == 160
    fixed64 = build(model="test_resnet", weights="random", input_size=64)
    assert fixed64.preprocessing.input_size == 64 and fixed64._side(224, 224) == 64
    assert fixed64.encode(tiles(2, 224)).shape == (2, fixed64.out_dim)
    vit_auto = build(model="test_vit", weights="random")  # a fixed-size model gets its own size (tiles resized)
    assert vit_auto.fixed_input_size and vit_auto._side(64, 64) == 160
    assert vit_auto.encode(tiles(2, 64)).shape == (2, vit_auto.out_dim)
    vit = build(model="test_vit", weights="random", input_size=64)  # built at 64 px (img_size=64)
    assert vit.preprocessing.input_size == 64
    patch = vit.model.patch_embed.patch_size[0]
    assert vit.encode_tokens(tiles(2, 64)).shape[1] == vit.num_prefix_tokens + (64 // patch) ** 2
    assert "size=64" in vit.identity()


def test_pool_option():
    avg = build(model="test_vit", weights="random", pool="avg")
    cls = build(model="test_vit", weights="random", pool="cls")
    assert avg.pool_type == "avg" and cls.pool_type == "token"
    x = tiles(2, 160)
    assert not torch.allclose(avg.encode(x), cls.encode(x))
    cnn = build(model="test_resnet", weights="random", pool="max")
    assert cnn.pool_type == "max" and "pool=max" in cnn.identity()
    fmap = cnn.encode_tokens(x)  # (B, h·w, C): max over positions is the max-pooled feature
    assert torch.allclose(cnn.encode(x), fmap.amax(1), atol=1e-6)


def test_bad_tiles_are_data_errors():
    enc = build(model="test_resnet", weights="random")
    with pytest.raises(DataError, match="uint8"):
        enc.encode(torch.zeros(2, 3, 32, 32))
    with pytest.raises(DataError, match=r"\(B, 3, H, W\)"):
        enc.encode(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    assert enc.encode(torch.zeros(0, 3, 32, 32, dtype=torch.uint8)).shape == (0, enc.out_dim)


def test_unknown_model_is_a_spec_error():
    with pytest.raises(SpecError, match="did you mean"):
        build(model="resnet5", weights="random")


# --------------------------------------------------------------------------------------------------------------
# pretrained weights: never a silent fallback, fast failure
# --------------------------------------------------------------------------------------------------------------


def test_pretrained_offline_raises_weights_unavailable_fast(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for params in (ResNet50Params(), ViTParams(), ViTParams(model="hf-hub:org/some-model@main")):
        t = time.perf_counter()
        with pytest.raises(WeightsUnavailable) as err:
            TimmImageEncoder(params)
        assert time.perf_counter() - t < 5.0
        msg = str(err.value)
        assert "could not be downloaded" in msg and "image.weights=random" in msg and "\n" not in msg


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailable, match="cannot reach"):
        TimmImageEncoder(ResNet50Params(model="resnet50.tv_in1k"))
    assert time.perf_counter() - t < 5.0


def _fake_hub_cache(root: Path, repo: str, commit: str = "c" * 40) -> Path:
    """The layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<commit>/...}."""
    d = root / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / "main").write_text(commit)
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def test_pretrained_from_the_local_hub_cache(monkeypatch, tmp_path):
    """Cached weights work offline; identity records repo@commit and the file's sha256."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    torch.manual_seed(5)
    model = timm.create_model("test_resnet.r160_in1k")
    snap = _fake_hub_cache(tmp_path, "timm/test_resnet.r160_in1k")
    save_file(model.state_dict(), str(snap / "model.safetensors"))
    enc = TimmImageEncoder(TimmEncoderParams(model="test_resnet.r160_in1k"))
    assert enc.weights_info["commit"] == "c" * 40
    assert f"hf-hub:timm/test_resnet.r160_in1k@{'c' * 40}" in enc.identity()
    model.reset_classifier(0)
    x = tiles(2, 160)
    assert torch.allclose(enc.encode(x), reference(model, x, enc.preprocessing.mean, enc.preprocessing.std),
                          atol=1e-5)
    # a wrong expected sha256 is refused
    with pytest.raises(WeightsUnavailable, match="sha256"):
        TimmImageEncoder(TimmEncoderParams(model="test_resnet.r160_in1k", sha256="0" * 64))
    ok = TimmImageEncoder(TimmEncoderParams(model="test_resnet.r160_in1k", sha256=enc.weights_info["sha256"]))
    assert ok.identity() == enc.identity()


def test_hf_hub_and_local_dir_models(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    torch.manual_seed(6)
    model = timm.create_model("test_vit")
    snap = _fake_hub_cache(tmp_path, "org/tiny-vit")
    timm.models.save_for_hf(model, str(snap), safe_serialization=True)
    hub = TimmImageEncoder(ViTParams(model="hf-hub:org/tiny-vit"))
    local = TimmImageEncoder(ViTParams(model=f"local-dir:{snap}"))
    as_weights = TimmImageEncoder(ViTParams(model="test_vit", weights=f"local-dir:{snap}"))
    x = tiles(2, 160)
    ref = hub.encode(x)
    assert torch.equal(local.encode(x), ref) and torch.equal(as_weights.encode(x), ref)
    assert hub.preprocessing == local.preprocessing
    assert hub.weights_info["sha256"] == local.weights_info["sha256"]
    with pytest.raises(SpecError, match="image.model"):
        TimmImageEncoder(ViTParams(model="test_resnet", weights=f"local-dir:{snap}"))


# --------------------------------------------------------------------------------------------------------------
# local safetensors files
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headless", [False, True])
def test_local_safetensors_weights(tmp_path, headless):
    from safetensors.torch import save_file

    torch.manual_seed(11)
    model = timm.create_model("test_vit", num_classes=0 if headless else 1000)
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(99)  # the file, not the seed, decides the weights
    enc = TimmImageEncoder(ViTParams(model="test_vit", weights=str(path)))
    model.reset_classifier(0)
    x = tiles(2, 160)
    assert torch.allclose(enc.encode(x), reference(model, x, enc.preprocessing.mean, enc.preprocessing.std),
                          atol=1e-5)
    assert enc.weights_info["source"] == "file" and enc.weights_info["sha256"] in enc.identity()


def test_local_file_errors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), str(path))
    with pytest.raises(WeightsUnavailable, match="does not match"):
        TimmImageEncoder(TimmEncoderParams(model="test_resnet", weights=str(path)))
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        TimmImageEncoder(TimmEncoderParams(model="test_resnet", weights=str(tmp_path / "nope.safetensors")))
    with pytest.raises(SpecError, match="safetensors"):
        TimmImageEncoder(TimmEncoderParams(model="test_resnet", weights=str(tmp_path / "model.pth")))


# --------------------------------------------------------------------------------------------------------------
# params
# --------------------------------------------------------------------------------------------------------------


def test_params():
    from pydantic import ValidationError

    assert ResNet50Params().model == "resnet50" and ViTParams().model == "vit_small_patch16_224"
    assert TimmEncoderParams().weights == "pretrained" and TimmEncoderParams().input_size == "auto"
    assert TimmEncoderParams(weights="/x/y.safetensors").weights == "/x/y.safetensors"
    for bad in ({"nope": 1}, {"input_size": 8}, {"batch_size": 0}, {"sha256": "xyz"}, {"pool": "mean"}):
        with pytest.raises(ValidationError):
            TimmEncoderParams(**bad)
    with pytest.raises(ValidationError):
        ResNet50Params(extra=1)
    with pytest.raises(ValidationError):
        ResNet50Params().model_copy().__setattr__("model", "x")  # frozen
