"""Magic's ridge read-out (``decoder.ridge_readout``): the stored weights reproduce the ``ridge-cv`` baseline's
fit, the decoder mixes it only in eval mode, the setting is left out of specs when off, and a run with it saves the
read-out and predicts with it (tiny synthetic data, seconds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")


def test_folded_ridge_equals_the_ridge_cv_baseline():
    from stmm_magic.baseline import ridge_cv
    from stmm_magic.readout import ridge_coefficients

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6)) * rng.uniform(0.1, 5, size=6) + rng.normal(size=6)
    y = x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(scale=0.5, size=(90, 4))
    groups = np.repeat([0, 1, 2], 30)
    xt = rng.normal(size=(20, 6))
    ref, info_ref = ridge_cv(x, y, xt, groups, n_components=256)
    w, b, info = ridge_coefficients(x, y, groups)
    assert info["alpha"] == info_ref["alpha"]
    np.testing.assert_allclose(xt @ w.T + b, ref, rtol=1e-4, atol=1e-4)


def test_decoder_mixes_the_ridge_in_eval_mode_only_and_the_setting_is_dropped_when_off():
    from stmm_magic.decoder import GeneQueryDecoder
    from stmm_magic.params import QueryDecoderParams

    assert "ridge_readout" not in QueryDecoderParams().model_dump()
    assert QueryDecoderParams(ridge_readout=0.5).model_dump()["ridge_readout"] == 0.5
    with pytest.raises(ValueError):
        QueryDecoderParams(ridge_readout=1.5)
    torch.manual_seed(0)
    params = dict(n_targets=3, dim=8, heads=2, expansion=[8], dropout=0.0)
    plain = GeneQueryDecoder(QueryDecoderParams(**params)).setup(5, ["a", "b", "c"])
    mixed = GeneQueryDecoder(QueryDecoderParams(**params, ridge_readout=0.25)).setup(5, ["a", "b", "c"])
    mixed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        plain.readout.weight.normal_()  # a decoder that is not the mean predictor
        mixed.readout.weight.copy_(plain.readout.weight)
    tok = torch.randn(7, 1, 5)
    plain.eval(), mixed.eval()
    torch.testing.assert_close(mixed(tok), plain(tok))  # not fitted yet: the decoder alone
    w, b = torch.randn(3, 5), torch.randn(3)
    mixed.set_ridge(w, b)
    assert {"ridge_weight", "ridge_bias", "ridge_fitted"} <= set(mixed.state_dict())
    torch.testing.assert_close(mixed(tok), 0.75 * plain(tok) + 0.25 * (tok[:, 0] @ w.T + b))
    mixed.train(), plain.train()
    torch.testing.assert_close(mixed(tok), plain(tok))  # training optimises the decoder's own output
    with pytest.raises(RuntimeError, match="ridge_readout"):
        plain.set_ridge(w, b)


def test_a_run_saves_the_ridge_readout_and_predicts_with_it(tmp_path, monkeypatch):
    from magic_tiny import TINY_MODEL

    from stmm_core.cli.main import main
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import image_input_px, read_sections
    from stmm_magic.readout import image_embedding
    from stmm_magic.run_io import load_run

    paths = []
    for i in (1, 2, 3):
        p = tmp_path / f"s{i}.h5ad"
        make_synthetic_adata(n_spots=30, n_genes=40, n_domains=3, seed=i, image_scale=0.5).write_h5ad(p)
        paths.append(p)
    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STMM_PROGRESS", "0")
    args = TINY_MODEL + ["--set", "train.stage1.epochs=1", "--set", "train.stage1.batch_size=16",
                         "--set", "train.stage2.epochs=1", "--set", "train.stage2.batch_size=16",
                         "--set", "decoder.ridge_readout=0.5", "-q"]
    assert main(["run", "magic", "--data", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "run"), *args]) == 0
    run = load_run(tmp_path / "run")
    ro = run.meta["ridge_readout"]
    assert ro["weight"] == 0.5 and ro["cv"] == "leave one training section out"
    assert ro["n_spots"] == run.meta["split"]["n_train"]
    dec = run.stage2.decoder
    assert int(dec.ridge_fitted) == 1 and dec.ridge_weight.abs().sum() > 0
    sec = read_sections([str(paths[2])])[0]
    spec = run.spec
    tiles = torch.from_numpy(section_tiles(sec, tile_size_fullres(sec, spec.tiles.size, spec.tiles.size_factor),
                                           image_input_px(spec), spec.tiles.pad_value, None))
    got = run.stage2.predict(tiles)
    emb = torch.from_numpy(image_embedding(run.stage2, tiles)).float()
    ridge = emb @ dec.ridge_weight.T + dec.ridge_bias
    dec_only = 2 * got - ridge  # got = 0.5 * decoder + 0.5 * ridge
    with torch.no_grad():
        dec.ridge_fitted.fill_(0)
        plain = run.stage2.predict(tiles)
    torch.testing.assert_close(dec_only, plain, rtol=1e-4, atol=1e-4)
