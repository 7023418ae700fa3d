"""Magic's read-out ensemble (``decoder.ensemble``): the stored ridge reproduces the ``ridge-cv`` baseline's fit,
the retrieval returns the mean of the nearest training spots in the joint space, the decoder averages them only in
eval mode, the setting is left out of specs when empty, and a run saves the read-outs, reloads them at their
fitted sizes and predicts with them (tiny synthetic data, seconds)."""

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


def test_decoder_averages_the_readouts_in_eval_mode_only_and_the_setting_is_dropped_when_empty():
    from stmm_magic.decoder import GeneQueryDecoder
    from stmm_magic.params import QueryDecoderParams

    assert "ensemble" not in QueryDecoderParams().model_dump()
    assert QueryDecoderParams(ensemble=["ridge", "retrieval"]).model_dump()["ensemble"] == ["ridge", "retrieval"]
    for bad in (["ridge", "ridge"], ["lasso"]):
        with pytest.raises(ValueError):
            QueryDecoderParams(ensemble=bad)
    torch.manual_seed(0)
    params = dict(n_targets=3, dim=8, heads=2, expansion=[8], dropout=0.0)
    plain = GeneQueryDecoder(QueryDecoderParams(**params)).setup(5, ["a", "b", "c"])
    mixed = GeneQueryDecoder(QueryDecoderParams(**params, ensemble=["ridge", "retrieval"])).setup(5, ["a", "b", "c"])
    mixed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        plain.readout.weight.normal_()  # a decoder that is not the mean predictor
        mixed.readout.weight.copy_(plain.readout.weight)
    tok = torch.randn(7, 1, 5)
    plain.eval(), mixed.eval()
    torch.testing.assert_close(mixed(tok), plain(tok))  # not fitted yet: the decoder alone
    w, b = torch.randn(3, 5), torch.randn(3)
    proj_w, proj_b = torch.randn(4, 5), torch.randn(4)
    keys = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    values = torch.randn(10, 3)
    mixed.set_ensemble((w.numpy(), b.numpy()), {"proj_weight": proj_w.numpy(), "proj_bias": proj_b.numpy(),
                                                "keys": keys.numpy(), "values": values.numpy(), "k": 2})
    q = torch.nn.functional.normalize(tok[:, 0] @ proj_w.T + proj_b, dim=1)
    near = (q @ keys.T).argsort(dim=1, descending=True)[:, :2]
    retr = values[near].mean(1)
    torch.testing.assert_close(mixed(tok), (plain(tok) + (tok[:, 0] @ w.T + b) + retr) / 3)
    # a fresh decoder loads the fitted read-outs at their sizes
    again = GeneQueryDecoder(QueryDecoderParams(**params, ensemble=["ridge", "retrieval"])).setup(5, ["a", "b", "c"])
    again.load_state_dict(mixed.state_dict())
    again.eval()
    torch.testing.assert_close(again(tok), mixed(tok), rtol=0, atol=0)
    mixed.train(), plain.train()
    torch.testing.assert_close(mixed(tok), plain(tok))  # training optimises the decoder's own output
    with pytest.raises(RuntimeError, match="ensemble"):
        plain.set_ensemble((w.numpy(), b.numpy()))


def test_a_run_saves_the_readouts_and_predicts_with_them(tmp_path, monkeypatch):
    from magic_tiny import TINY_MODEL

    from stmm_core.cli.main import main
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import image_input_px, read_sections
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
                         "--set", 'decoder.ensemble=["ridge","retrieval"]', "-q"]
    assert main(["run", "magic", "--data", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "run"), *args]) == 0
    run = load_run(tmp_path / "run")
    ro = run.meta["readout_ensemble"]
    assert ro["members"] == ["decoder", "ridge", "retrieval"] and ro["n_spots"] == run.meta["split"]["n_train"]
    assert ro["ridge"]["cv"] == ro["retrieval"]["cv"] == "leave one training section out"
    dec = run.stage2.decoder
    assert int(dec.ensemble_fitted) == 1 and dec.ridge_weight.abs().sum() > 0
    assert dec.retr_keys.shape[0] == ro["n_spots"] and int(dec.retr_k) == ro["retrieval"]["k"]
    # the stored projection head is stage 1's
    torch.testing.assert_close(dec.retr_proj_weight, run.stage1.contrastive.image_proj.weight, rtol=1e-6, atol=1e-6)
    sec = read_sections([str(paths[2])])[0]
    spec = run.spec
    tiles = torch.from_numpy(section_tiles(sec, tile_size_fullres(sec, spec.tiles.size, spec.tiles.size_factor),
                                           image_input_px(spec), spec.tiles.pad_value, None))
    got = run.stage2.predict(tiles)
    emb = run.stage2.image(tiles)["pooled"].detach()
    with torch.no_grad():
        members = dec.member_output("ridge", emb) + dec.member_output("retrieval", emb)
        dec.ensemble_fitted.fill_(0)
        plain = run.stage2.predict(tiles)
    torch.testing.assert_close(got, (plain + members) / 3, rtol=1e-5, atol=1e-5)
