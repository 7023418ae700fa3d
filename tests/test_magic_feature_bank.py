"""Magic's CPU image encoder ``stain-bank-mlp`` (frozen weight-free feature bank + trainable MLP): shapes, the bank
is never trained (its z-score is fitted once on the training tiles), stage 1 trains the MLP, stage 2 reads it
frozen, and a moved run folder predicts bit for bit in a fresh process (tiny synthetic sections, seconds)."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import run_stmm  # noqa: E402
from magic_tiny import TINY_MODEL, write_sections  # noqa: E402

TINY = TINY_MODEL + ["--set", "train.stage1.epochs=2", "--set", "train.stage1.batch_size=16",
                     "--set", "train.stage2.epochs=1", "--set", "train.stage2.batch_size=16", "-q"]


def _encoder(**kw):
    from stmm_magic.feature_bank import StainBankMLP
    from stmm_magic.params import StainBankMLPParams

    torch.manual_seed(0)
    return StainBankMLP(StainBankMLPParams(**{"img_size": 32, "hidden": [16], "out_dim": 8, **kw}))


def test_shapes_names_and_the_bank_has_no_weights():
    from stmm_vision.params import StainStatsParams
    from stmm_vision.stain import StainStatsEncoder

    enc = _encoder()
    tiles = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)  # another size: resized to img_size
    out = enc(tiles)
    assert out["pooled"].shape == (5, 8) and out["tokens"].shape == (5, 1, 8)
    assert enc.bank_dim == len(enc.feature_names()) == 3 * (21 + 6) and enc.token_dim == enc.out_dim == 8
    # every trainable tensor is the MLP's; the bank is stain-stats plus texture, computed, not learned
    assert all(n.startswith("mlp.") for n, _ in enc.named_parameters())
    stain = StainStatsEncoder(StainStatsParams(scales=[1.0, 0.5, 0.25], input_size=32))
    raw = enc.bank_raw(tiles)
    np.testing.assert_allclose(raw[:, :stain.out_dim].numpy(), stain.encode(enc.prepare(tiles)).numpy(), rtol=1e-6)
    assert _encoder(texture=False).bank_dim == 3 * 21
    from stmm_core.errors import DataError

    with pytest.raises(DataError, match="at least 2"):
        enc.fit_inputs(tiles[:1])
    with pytest.raises(DataError, match="uint8 RGB"):
        enc(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))


def test_fit_inputs_zscores_the_bank_and_leaves_the_mlp_alone():
    enc = _encoder()
    g = torch.Generator().manual_seed(1)
    tiles = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    before = {k: v.clone() for k, v in enc.mlp.state_dict().items()}
    info = enc.fit_inputs(tiles)
    assert info == {"n_tiles": 40, "bank_dim": enc.bank_dim} and int(enc.bank_fitted) == 1
    z = enc.bank(tiles)
    varying = enc.bank_raw(tiles).std(0) > 1e-4
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, unbiased=False)[varying].numpy(), 1, atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in enc.mlp.state_dict().items())
    # the statistics are buffers saved with the weights
    assert {"bank_mean", "bank_std", "bank_fitted"} <= set(enc.state_dict())


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory):
    from stmm_core.cli.main import main

    root = tmp_path_factory.mktemp("magic-bank")
    paths = write_sections(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STMM_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("STMM_PROGRESS", "0")
        assert main(["run", "magic", "--data", str(paths[0]), str(paths[1]), "-o", str(root / "run"), *TINY]) == 0
        assert main(["predict", str(root / "run"), "--data", str(paths[2]), "-o", str(root / "local.h5ad")]) == 0
        yield root, paths
    torch.set_num_threads(threads)


def test_stage1_trains_the_mlp_and_the_bank_statistics_are_the_training_tiles(bank_run):
    from safetensors.torch import load_file

    from stmm_core.seeding import seed_everything
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.model import params_digest
    from stmm_magic.pipeline import build_component, image_input_px, read_sections
    from stmm_magic.run_io import read_run_spec

    root, paths = bank_run
    spec, meta = read_run_spec(root / "run")
    assert spec.components["image"].name == "stain-bank-mlp" and spec.tiles.size_factor == 2.0
    s1 = load_file(str(root / "run" / "stage1.safetensors"))
    s2 = load_file(str(root / "run" / "stage2.safetensors"))
    # the bank's z-score: fitted once on both training sections' tiles, never trained
    secs = read_sections([str(p) for p in paths[:2]])
    tiles = np.concatenate([section_tiles(s, tile_size_fullres(s, spec.tiles.size, spec.tiles.size_factor),
                                          image_input_px(spec), spec.tiles.pad_value, None) for s in secs])
    ref = build_component(spec, "image")
    ref.fit_inputs(torch.from_numpy(tiles))
    assert meta["image_bank"]["n_tiles"] == len(tiles) == 72
    torch.testing.assert_close(s1["image.bank_mean"], ref.bank_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1["image.bank_std"], ref.bank_std, rtol=1e-5, atol=1e-6)
    # the MLP starts from the seeded initialisation and stage 1 moves it
    seed_everything(int(spec.train.seed))
    init = build_component(spec, "image")
    assert params_digest(init) == meta["image_init"]["params_sha256"]
    trained = {k[len("image."):]: v for k, v in s1.items() if k.startswith("image.mlp.")}
    assert any(not torch.equal(v, init.state_dict()[k]) for k, v in trained.items())
    # stage 2 reads the stage-1 encoder frozen: identical tensors, bank statistics included
    img1 = {k: v for k, v in s1.items() if k.startswith("image.")}
    assert all(torch.equal(img1[k], s2[k]) for k in img1)
    assert meta["stage2_image"] == {"loaded_from_stage1": True, "frozen": True}


def test_moved_run_folder_predicts_bit_for_bit_in_a_fresh_process(bank_run, tmp_path):
    root, paths = bank_run
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(root / "run", moved)
    env = {"STMM_CACHE_DIR": str(tmp_path / "cache2"), "HF_HUB_OFFLINE": "1", "STMM_THREADS": "1"}
    r = run_stmm(["predict", str(moved), "--data", str(paths[2]), "-o", str(tmp_path / "moved.h5ad")], env=env)
    assert r.returncode == 0, r.stderr
    ref, got = ad.read_h5ad(root / "local.h5ad"), ad.read_h5ad(tmp_path / "moved.h5ad")
    assert list(got.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(got.X, ref.X)
    assert json.loads((moved / "spec.json").read_text())["components"]["image"]["name"] == "stain-bank-mlp"


def test_decoder_linear_head_starts_at_the_mean_and_is_left_out_of_specs_when_off():
    from stmm_magic.decoder import GeneQueryDecoder
    from stmm_magic.params import QueryDecoderParams

    torch.manual_seed(0)
    mean = np.linspace(0, 1, 5).astype(np.float32)
    dec = GeneQueryDecoder(QueryDecoderParams(n_targets=5, dim=8, heads=2, expansion=[8], linear_head=True))
    dec.setup(6, [f"g{i}" for i in range(5)], mean)
    tok = torch.randn(4, 1, 6)
    np.testing.assert_allclose(dec(tok).detach().numpy(), np.tile(mean, (4, 1)), atol=1e-6)  # zero-initialised
    dec(tok).pow(2).sum().backward()
    assert dec.linear.weight.grad is not None and dec.linear.weight.grad.abs().sum() > 0
    assert "linear_head" not in QueryDecoderParams().model_dump()
    assert QueryDecoderParams(linear_head=True).model_dump()["linear_head"] is True
