"""Ablations of Magic's stage 1 as benchmark rows (``magic-no-stage1``, ``stage1-ridge``) and library-size
robustness of Magic's inputs and targets (tiny synthetic sections, seconds on one core)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from magic_tiny import TINY_MODEL  # noqa: E402


def _tiny_sets() -> dict:
    import json

    keys = TINY_MODEL[1::2]
    out = {}
    for kv in keys:
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    out.update({"train.stage1.epochs": 2, "train.stage1.batch_size": 16, "train.stage2.epochs": 1,
                "train.stage2.batch_size": 16})
    return out


def test_stage1_ablation_rows_are_computed_on_the_same_folds(tmp_path, monkeypatch):
    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.testing.synthetic import make_synthetic_adata

    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = []
    for i in range(3):
        p = tmp_path / f"sec{i}.h5ad"
        make_synthetic_adata(n_spots=40, n_genes=40, n_domains=3, seed=30 + i, image_scale=0.5).write_h5ad(p)
        paths.append(str(p))
    names = ["magic", "magic-no-stage1", "stage1-ridge", "init-ridge", "context-ridge"]
    tiny = _tiny_sets()
    sets = {n: dict(tiny) for n in names}
    sets["magic-no-stage1"]["train.stage1.epochs"] = 0
    work = tmp_path / "work"
    res = run_benchmark("expression", pipelines=names, datasets=paths, folds=["sec1"], progress=False,
                        log=lambda m: None, work_dir=work, sets=sets).result
    rows = {r.pipeline: r for r in res.rows}
    assert all(rows[n].status == "ok" for n in names), {n: rows[n].error for n in names}
    for n in names:
        assert np.isfinite(rows[n].metrics["pearson_all"]) and np.isfinite(rows[n].metrics["mse"])
    # the decoder without stage 1 reads the encoder at the initialisation stage 1 starts from
    init = rows["magic"].details["image_init_params_sha256"]
    assert rows["magic-no-stage1"].details["image_init_params_sha256"] == init
    assert rows["magic-no-stage1"].details["timings"].get("stage1_seconds", 0) < 5
    # stage1-ridge reads magic's own stage 1 (reused, not retrained) and starts from init-ridge's encoder
    s1 = rows["stage1-ridge"].details["fit"]["stage1"]
    assert s1["reused"] and "/folds/magic-" in s1["stage1_run"]
    assert s1["init_params_sha256"] == init == rows["init-ridge"].details["image_init_params_sha256"]
    # context-ridge reads the frozen bank itself (no weights, no PCA)
    assert rows["context-ridge"].details["image_init_params_sha256"] == "feature bank (no weights)"
    assert rows["context-ridge"].details["fit"]["features"] == 81
    assert s1["trained_params_sha256"] != init
    assert rows["stage1-ridge"].details["fit"]["cv"] == "leave one training section out"
    from stmm_magic.ablation import ablation_lines

    lines = ablation_lines(res.rows, ["pearson_all"])
    assert len(lines) == 2 and "magic - magic-no-stage1" in lines[0] and "stage1-ridge - init-ridge" in lines[1]
    diff = rows["magic"].metrics["pearson_all"] - rows["magic-no-stage1"].metrics["pearson_all"]
    assert f"= {diff:+.3f}" in lines[0] and "better in" in lines[0] and "sec1 s0" in lines[0]


def test_stage1_ridge_trains_its_own_stage1_when_no_magic_row_ran(tmp_path, monkeypatch):
    from stmm_core.benchmark.pipelines import select
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_magic.ablation import stage1_image_encoder

    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for i in range(2):
        p = tmp_path / f"s{i}.h5ad"
        make_synthetic_adata(n_spots=36, n_genes=40, n_domains=3, seed=40 + i, image_scale=0.5).write_h5ad(p)
        paths.append(str(p))
    pipe = select(["stage1-ridge"], [], {"stage1-ridge": _tiny_sets()})[0]
    assert pipe.error is None and pipe.method == "stage1-ridge"
    enc, info = stage1_image_encoder(pipe.spec, paths, tmp_path / "run")
    assert not info["reused"] and info["trained_params_sha256"] != info["init_params_sha256"]
    enc2, info2 = stage1_image_encoder(pipe.spec, paths, tmp_path / "run")  # now found in its own folder
    assert info2["reused"] and info2["trained_params_sha256"] == info["trained_params_sha256"]
    # another training set does not match that stage 1
    _, info3 = stage1_image_encoder(pipe.spec, paths[:1], tmp_path / "run1", reuse=[tmp_path / "run"])
    assert not info3["reused"]


def test_inputs_targets_and_scores_do_not_depend_on_library_size(tmp_path):
    """A section sequenced 10x shallower (every count / 10, here: the deep one is x10) gives the same gene
    tokens, the same log1p targets and the same scores: both are computed after per-spot normalisation."""
    from dataclasses import replace

    import scipy.sparse as sp

    from stmm_core.data.readers import read_section
    from stmm_core.testing.synthetic import make_synthetic_adata
    from stmm_magic.gene_encoder import PerformerGeneEncoder
    from stmm_magic.genes import log1p_expression, select_genes
    from stmm_magic.metrics import pearson_per_gene
    from stmm_magic.params import PerformerGeneEncoderParams

    make_synthetic_adata(n_spots=50, n_genes=60, n_domains=3, seed=3).write_h5ad(tmp_path / "s.h5ad")
    shallow = read_section(tmp_path / "s.h5ad")
    deep = replace(shallow, counts=sp.csr_matrix(shallow.counts.multiply(10)))
    genes = select_genes([shallow], 20, "mean", None, 1e4, "targets")
    assert genes == select_genes([deep], 20, "mean", None, 1e4, "targets")
    y_s, y_d = log1p_expression(shallow, genes, 1e4), log1p_expression(deep, genes, 1e4)
    np.testing.assert_allclose(y_s, y_d, rtol=1e-5, atol=1e-6)
    enc = PerformerGeneEncoder(PerformerGeneEncoderParams(n_genes=20, dim=8, depth=1, heads=2, dim_head=4,
                                                          out_dim=8)).fit_sections([shallow])
    np.testing.assert_array_equal(enc.tokenize(shallow), enc.tokenize(deep))
    # raw counts would differ by log(10) per detected gene: the per-gene scores see no difference at all
    pred = y_s + np.random.default_rng(0).normal(0, 0.3, y_s.shape).astype(np.float32)
    assert pearson_per_gene(pred, y_s, genes)["mean"] == pytest.approx(pearson_per_gene(pred, y_d, genes)["mean"],
                                                                      abs=1e-5)


def test_masked_expression_pretraining_learns_and_feeds_stage1(tmp_path, monkeypatch):
    """Count tables without images pre-train the gene encoder (masked-bin loss falls, beats the majority
    bin); a run with gene.pretrain_epochs records it and its spec hash differs only when asked."""
    import pandas as pd

    from stmm_core.cli.main import main
    from stmm_core.recipes import all_recipes
    from stmm_core.spec import PipelineSpec
    from stmm_core.testing.synthetic import make_synthetic_adata

    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tables = tmp_path / "cnts"
    tables.mkdir()
    for i in range(3):  # counts-only sections, one 10x shallower
        a = make_synthetic_adata(n_spots=60, n_genes=40, n_domains=3, seed=50 + i)
        x = np.asarray(a.X.todense() if hasattr(a.X, "todense") else a.X)
        if i == 2:
            x = np.random.default_rng(0).binomial(x.astype(np.int64), 0.1)
        pd.DataFrame(x, index=[f"{j}x{j}" for j in range(len(x))], columns=a.var_names).to_csv(
            tables / f"T{i}.tsv.gz", sep="\t")
    secs = []
    for i in range(2):
        p = tmp_path / f"s{i}.h5ad"
        make_synthetic_adata(n_spots=36, n_genes=40, n_domains=3, seed=60 + i, image_scale=0.5).write_h5ad(p)
        secs.append(str(p))
    args = [a for kv in _tiny_sets().items() for a in ("--set", f"{kv[0]}={kv[1]}")]
    run = tmp_path / "run"
    code = main(["run", "magic", "--data", *secs, "-o", str(run), *[a.replace("'", '"') for a in args],
                 "--set", f"gene.pretrain_counts=[\"{tables}\"]", "--set", "gene.pretrain_epochs=40",
                 "--set", "gene.pretrain_lr=0.01", "-q"])
    assert code == 0
    import json

    pre = json.loads((run / "magic.json").read_text())["gene_pretraining"]
    assert 170 <= pre["n_spots"] <= 180 and len(pre["tables"]) == 3 and len(pre["history"]) == 40
    assert pre["history"][-1]["loss"] < pre["history"][0]["loss"]
    assert pre["history"][-1]["masked_acc"] > pre["majority_acc"]
    # the default (no pre-training, no linear decoder head) leaves the spec hash of the ViT recipe as it was
    # when it was called magic
    data = dict(all_recipes()["magic-vit"]["spec"], recipe="magic")
    assert PipelineSpec.model_validate(data).hash()[:12] == "c321162d9dee"
