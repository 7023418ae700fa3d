"""The magic pipeline end to end on tiny synthetic sections: spec, `stmm run magic` (both stages and one at
a time), stage-2 freezing, save/load, `stmm predict`, `stmm evaluate`, and bad inputs as one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from stmm_core.cli.main import main  # noqa: E402
from stmm_core.errors import SpecError  # noqa: E402
from magic_tiny import TINY_VIT_MODEL as TINY_MODEL  # noqa: E402

TINY = TINY_MODEL + [
    "--set", "train.stage1.epochs=2", "--set", "train.stage1.batch_size=16",
    "--set", "train.stage2.epochs=2", "--set", "train.stage2.batch_size=16", "-q",
]


def _write(path: Path, seed: int, n_spots: int = 36, n_genes: int = 40) -> Path:
    from stmm_core.testing.synthetic import make_synthetic_adata

    make_synthetic_adata(n_spots=n_spots, n_genes=n_genes, n_domains=3, seed=seed, image_scale=0.5).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Three synthetic sections and one trained tiny run (both stages), with an isolated cache."""
    root = tmp_path_factory.mktemp("magic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster (and kinder to a shared CPU)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STMM_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("STMM_PROGRESS", "0")
        a, b, c = (_write(root / f"s{i}.h5ad", i) for i in (1, 2, 3))
        run = root / "run"
        code = main(["run", "magic-vit", "--data", str(a), str(b), "-o", str(run), *TINY])
        assert code == 0
        yield {"root": root, "a": a, "b": b, "c": c, "run": run}
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _env_vars(env, monkeypatch):
    monkeypatch.setenv("STMM_CACHE_DIR", str(env["root"] / "cache"))


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ------------------------------------------------------------------------------------------------ spec
def test_magic_recipe_spec_and_stage_rules():
    from stmm_core.cli.compose_cmd import compose_spec

    spec = compose_spec("magic", None, {})
    assert spec.pipeline == "magic"
    assert spec.train.stage2.load == ("image",) and spec.train.stage2.freeze == ("image",)
    assert spec.hash() == compose_spec("magic", None, {}).hash()
    with pytest.raises(SpecError, match="stage2.load"):
        compose_spec("magic", None, {"train.stage2.load": ["gene"]})
    from stmm_core.spec import parse_spec

    data = spec.to_dict()
    data["components"]["fusion"] = None  # matching needs the fusion module
    with pytest.raises(SpecError, match="fusion"):
        parse_spec(data)


def test_graph_fusion_run_with_several_sections_refuses_one_section_flags(capsys, env):
    # several --data sections are one joint graph-fusion fit (tests/test_consensus.py); --image/--scale belong
    # to a single section
    code = main(["run", "stereomm", "--data", str(env["a"]), str(env["b"]), "-o", str(env["root"] / "gf"),
                 "--image", str(env["a"]), "--scale", "1"])
    assert code == 2 and "apply to one section" in _err_line(capsys)


# ------------------------------------------------------------------------------------------- training
def test_run_writes_a_complete_run_folder(env):
    run = env["run"]
    for f in ("spec.json", "magic.json", "stage1.safetensors", "stage2.safetensors", "loss_stage1.png"):
        assert (run / f).is_file(), f
    meta = json.loads((run / "magic.json").read_text())
    assert len(meta["genes"]["input"]) == 16 and len(meta["genes"]["targets"]) == 12
    assert set(meta["genes"]["eval_hvg"]) <= set(meta["genes"]["targets"]) and len(meta["genes"]["eval_hvg"]) == 5
    assert meta["image_init"]["source"] == "random"
    assert len(meta["history_stage1"]) == 2 and "loss_itm" in meta["history_stage1"][0]
    assert meta["stage2_image"] == {"loaded_from_stage1": True, "frozen": True}


def test_stage2_loads_and_freezes_the_stage1_image_encoder(env):
    from safetensors.torch import load_file

    s1 = load_file(str(env["run"] / "stage1.safetensors"))
    s2 = load_file(str(env["run"] / "stage2.safetensors"))
    img1 = {k: v for k, v in s1.items() if k.startswith("image.")}
    assert img1 and all(torch.equal(img1[k], s2[k]) for k in img1)  # loaded, then never updated
    assert not any(k.startswith(("momentum_", "contrastive.image_queue")) for k in s1)  # EMA copies not saved


def test_frozen_encoder_gets_no_gradient(env):
    from stmm_magic.settings import MagicStageSpec
    from stmm_magic.model import freeze
    from stmm_magic.pipeline import build_stage2
    from stmm_magic.run_io import read_run_spec
    from stmm_magic.train import train_stage2

    spec, meta = read_run_spec(env["run"])
    model = build_stage2(spec, meta["genes"]["targets"], None)
    freeze([model.image])
    tiles = torch.randint(0, 255, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.randn(20, 12)
    before = {k: v.clone() for k, v in model.image.state_dict().items()}
    train_stage2(model, tiles, y, np.arange(16), np.arange(16, 20), MagicStageSpec(epochs=1, batch_size=8),
                 "flips", 0)
    assert all(p.grad is None and not p.requires_grad for p in model.image.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.image.state_dict().items())
    assert any(p.grad is not None for p in model.decoder.parameters())


def test_save_load_round_trip_and_stage_by_stage(env, capsys):
    from safetensors.torch import load_file

    from stmm_magic.run_io import load_run

    run = load_run(env["run"])
    saved = load_file(str(env["run"] / "stage2.safetensors"))
    for k, v in run.stage2.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # stage 1 alone, twice: deterministic on CPU for a seed; then stage 2 into the same folder
    outs = []
    for name in ("s1a", "s1b"):
        out = env["root"] / name
        assert main(["run", "magic-vit", "--data", str(env["a"]), str(env["b"]), "-o", str(out), "--stage", "1",
                     *TINY]) == 0
        assert not (out / "stage2.safetensors").exists()
        outs.append(load_file(str(out / "stage1.safetensors")))
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    out = env["root"] / "s1a"
    assert main(["run", "magic-vit", "--data", str(env["a"]), str(env["b"]), "-o", str(out), "--stage", "2",
                 *TINY, "--set", "train.stage2.epochs=1"]) == 0  # stage-2 settings may differ
    assert (out / "stage2.safetensors").is_file()
    assert all(torch.equal(v, outs[0][k]) for k, v in load_file(str(out / "stage1.safetensors")).items())
    # stage 2 on a folder trained with another stage-1 spec is refused
    capsys.readouterr()
    assert main(["run", "magic-vit", "--data", str(env["a"]), str(env["b"]), "-o", str(out), "--stage", "2",
                 *TINY, "--set", "gene.n_genes=8"]) == 2
    assert "different spec" in _err_line(capsys)


# ------------------------------------------------------------------------------------- predict/evaluate
def test_predict_from_data_coords_and_grid(env, capsys):
    run, c = env["run"], env["c"]
    out = env["root"] / "pred_data.h5ad"
    assert main(["predict", str(run), "--data", str(c), "-o", str(out)]) == 0
    pred = ad.read_h5ad(out)
    held = ad.read_h5ad(c)
    meta = json.loads((run / "magic.json").read_text())
    assert pred.n_obs == held.n_obs and list(pred.var_names) == meta["genes"]["targets"]
    assert pred.X.dtype == np.float32 and "spatial" in pred.uns and out.with_suffix(".png").is_file()
    np.testing.assert_allclose(pred.obsm["spatial"], held.obsm["spatial"])

    # the same spots from an image file + a coordinates table give the same prediction
    from PIL import Image

    img = held.uns["spatial"]["synthetic"]["images"]["hires"]
    Image.fromarray(img).save(env["root"] / "he.png")
    pd.DataFrame({"id": held.obs_names, "x": held.obsm["spatial"][:, 0], "y": held.obsm["spatial"][:, 1]}).to_csv(
        env["root"] / "spots.csv", index=False)
    out2 = env["root"] / "pred_coords.h5ad"
    assert main(["predict", str(run), "--image", str(env["root"] / "he.png"), "--scale", "0.5",
                 "--coords", str(env["root"] / "spots.csv"), "-o", str(out2)]) == 0
    np.testing.assert_allclose(ad.read_h5ad(out2).X, pred.X, rtol=1e-5, atol=1e-5)

    # no spots: a grid over the tissue
    out3 = env["root"] / "pred_grid.h5ad"
    assert main(["predict", str(run), "--image", str(env["root"] / "he.png"), "--scale", "0.5", "-o", str(out3)]) == 0
    grid = ad.read_h5ad(out3)
    assert grid.n_obs > 10 and grid.uns["stmm_magic"]["grid"]
    assert "tissue-grid" in capsys.readouterr().out


def test_evaluate_json(env, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(env["run"]), "--data", str(env["c"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    n = res["n_spots"]
    assert res["genes"]["n_evaluated_targets"] == 12 and res["genes"]["n_eval_hvg"] == 5
    for head in ("contrastive", "itm_rerank", "decoder_expression"):
        r = res["retrieval"][head]
        assert r["n_candidates"] == n and 0 <= r["top1"] <= r["top5"] <= 1
        assert r["chance_top1"] == pytest.approx(1 / n) and r["chance_top5"] == pytest.approx(5 / n)
    assert -1 <= res["pearson_gene_all"]["mean"] <= 1
    assert res["pearson_gene_all"]["n_evaluated"] + res["pearson_gene_all"]["n_constant_excluded"] == 12
    assert main(["evaluate", str(env["run"]), "--data", str(env["c"]), "--itm-k", "4"]) == 0
    text = capsys.readouterr().out
    assert "chance" in text and "per-gene Pearson" in text


# ----------------------------------------------------------------------------------------- bad inputs
def test_evaluate_refuses_a_training_section_unless_asked(env, capsys, tmp_path):
    """Metrics on a section the run was trained on are not held-out: refused, or labelled 'training'."""
    capsys.readouterr()
    assert main(["evaluate", str(env["run"]), "--data", str(env["a"]), "--json"]) == 2
    line = _err_line(capsys)
    assert "trained on" in line and "--allow-training-section" in line
    copy = tmp_path / "copy-of-a.h5ad"  # a copy elsewhere is still the training section
    copy.write_bytes(env["a"].read_bytes())
    assert main(["evaluate", str(env["run"]), "--data", str(copy)]) == 2
    capsys.readouterr()
    assert main(["evaluate", str(env["run"]), "--data", str(env["a"]), "--allow-training-section", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "training"
    assert main(["evaluate", str(env["run"]), "--data", str(env["c"]), "--itm-k", "0"]) == 0
    assert "(held-out)" in capsys.readouterr().out


def test_predict_and_evaluate_outputs_are_checked_first(env, capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    capsys.readouterr()
    assert main(["predict", str(env["run"]), "--data", str(env["c"]), "-o", str(afile / "p.h5ad")]) == 2
    assert "is a file" in _err_line(capsys)
    assert main(["evaluate", str(env["run"]), "--data", str(env["c"]), "-o", str(afile / "m.json")]) == 2
    assert "is a file" in _err_line(capsys)
    out = tmp_path / "p.h5ad"
    assert main(["predict", str(env["run"]), "--data", str(env["c"]), "--gene", "NOSUCH", "-o", str(out)]) == 2
    assert "--gene 'NOSUCH'" in _err_line(capsys)
    assert not out.exists() and not out.with_suffix(".png").exists() and not list(tmp_path.glob(".stmm-partial-*"))


def test_magic_refuses_to_mix_run_folders(env, capsys, tmp_path):
    """A new magic run into an earlier run's folder needs --overwrite (stage 2 continues one on purpose)."""
    capsys.readouterr()
    assert main(["run", "magic-vit", "--data", str(env["a"]), str(env["b"]), "-o", str(env["run"]), *TINY]) == 2
    assert "--overwrite" in _err_line(capsys)


def test_held_out_section_missing_target_genes(env, capsys):
    meta = json.loads((env["run"] / "magic.json").read_text())
    a = ad.read_h5ad(env["c"])
    drop = meta["genes"]["targets"][:2]
    bad = env["root"] / "missing.h5ad"
    a[:, [g for g in a.var_names if g not in drop]].copy().write_h5ad(bad)
    capsys.readouterr()
    assert main(["evaluate", str(env["run"]), "--data", str(bad)]) == 2
    line = _err_line(capsys)
    assert line.startswith("stmm: error:") and "lacks 2 of the 12 target genes" in line
    assert main(["evaluate", str(env["run"]), "--data", str(bad), "--allow-missing-genes", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["genes"]["n_missing_targets"] == 2 and sorted(res["genes"]["missing_targets"]) == sorted(drop)


def test_disjoint_gene_sets_are_refused(env, capsys):
    a = ad.read_h5ad(env["a"])
    other = a.copy()
    other.var_names = [f"OTHER{i}" for i in range(other.n_vars)]
    path = env["root"] / "disjoint.h5ad"
    other.write_h5ad(path)
    capsys.readouterr()
    assert main(["run", "magic-vit", "--data", str(env["a"]), str(path), "-o", str(env["root"] / "dj"), *TINY]) == 2
    line = _err_line(capsys)
    assert "share 0 gene" in line and "intersection" in line


def test_image_that_does_not_match_the_coordinates(env, capsys):
    held = ad.read_h5ad(env["c"])
    xy = held.obsm["spatial"]
    pd.DataFrame({"id": held.obs_names, "x": xy[:, 0] * 10, "y": xy[:, 1] * 10}).to_csv(
        env["root"] / "far.csv", index=False)
    from PIL import Image

    Image.fromarray(held.uns["spatial"]["synthetic"]["images"]["hires"]).save(env["root"] / "he2.png")
    capsys.readouterr()
    assert main(["predict", str(env["run"]), "--image", str(env["root"] / "he2.png"), "--scale", "0.5",
                 "--coords", str(env["root"] / "far.csv"), "-o", str(env["root"] / "x.h5ad")]) == 2
    assert "outside" in _err_line(capsys)
    # a section whose stored image is too small for its coordinates is refused at reading time
    small = held.copy()
    small.uns["spatial"]["synthetic"]["images"]["hires"] = held.uns["spatial"]["synthetic"]["images"]["hires"][:50, :50]
    small.write_h5ad(env["root"] / "small.h5ad")
    assert main(["evaluate", str(env["run"]), "--data", str(env["root"] / "small.h5ad")]) == 2
    assert "outside" in _err_line(capsys)


def test_pretrained_weights_offline_are_a_clear_error(monkeypatch):
    from stmm_core.errors import WeightsUnavailable
    from stmm_core.plugins import get_catalogue

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = get_catalogue().get("image_encoder", "magic-vit")
    for model in ("vit_tiny_patch16_224", "hf-hub:some-org/some-vit@main"):
        with pytest.raises(WeightsUnavailable) as err:
            info.build({"model": model, "weights": "pretrained", "img_size": 32})
        assert "random" in str(err.value) and "\n" not in str(err.value)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
