"""Benchmark suites run a family through its hooks: Magic (tiny) in the expression, retrieval and domains suites,
and the core's generic fold evaluation (built on the capabilities only) agrees with Magic's own evaluation."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

TINY = {"image.model": "test_vit", "image.img_size": 32, "gene.n_genes": 16, "gene.dim": 16, "gene.depth": 1,
        "gene.heads": 2, "gene.dim_head": 8, "gene.out_dim": 16, "contrastive.embed_dim": 16,
        "contrastive.queue_size": 32, "fusion.dim": 16, "fusion.heads": 2, "fusion.ff_mult": 2,
        "decoder.n_targets": 12, "decoder.dim": 16, "decoder.heads": 2, "decoder.expansion": [16],
        "decoder.n_eval_hvg": 5, "train.stage1.epochs": 1, "train.stage1.batch_size": 16,
        "train.stage2.epochs": 1, "train.stage2.batch_size": 16}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.testing.synthetic import make_synthetic_adata

    root = tmp_path_factory.mktemp("family-bench")
    paths = []
    for i in range(3):
        p = root / f"sec{i}.h5ad"
        make_synthetic_adata(n_spots=36, n_genes=40, n_domains=3, seed=20 + i, image_scale=0.5).write_h5ad(p)
        paths.append(str(p))
    spec = root / "tiny-magic.json"
    spec.write_text(compose_spec("magic-vit", None, TINY).pretty_json())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STMM_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield root, paths, spec
    torch.set_num_threads(threads)


def test_magic_in_the_fold_suites_and_the_generic_evaluation_agrees(world):
    from stmm_core.benchmark.api import run_benchmark
    from stmm_core.benchmark.family_bench import generic_fold
    from stmm_core.spec import load_spec
    from stmm_magic.family import MagicPipeline

    root, paths, spec_path = world
    kw = dict(pipelines=[str(spec_path), "expression-gmm"], datasets=paths, folds=["sec1"], progress=False,
              log=lambda m: None, work_dir=root / "work")
    expr = run_benchmark("expression", **kw).result
    (row,) = [r for r in expr.rows if r.pipeline == "tiny-magic"]
    assert row.status == "ok", row.error
    assert -1 <= row.metrics["pearson_all"] <= 1 and row.details["n_targets"] == 12
    (gmm,) = [r for r in expr.rows if r.pipeline == "expression-gmm"]
    assert gmm.status == "not applicable"  # graph-fusion offers no expression capability
    retr = run_benchmark("retrieval", **kw).result
    (row2,) = [r for r in retr.rows if r.pipeline == "tiny-magic"]
    assert row2.status == "ok" and row2.details["reused"].endswith("eval.json")

    # the generic fold (fit → load → predict_expression / score → core metrics) on the same spec and fold
    spec = load_spec(spec_path)
    train = [paths[0], paths[2]]
    gen = generic_fold(MagicPipeline, spec, train, paths[1], root / "generic", "cpu", None)
    own = json.loads(next((root / "work").rglob("eval.json")).read_text())
    for key in ("pearson_all", "pearson_hvg50", "pearson_spot", "mse", "top1", "top5", "top1_decoder"):
        assert gen["metrics"][key] == pytest.approx(own["metrics"][key], rel=1e-6, abs=1e-9), key


def test_magic_in_the_domains_suite(world):
    from stmm_core.benchmark.api import run_benchmark

    root, paths, spec_path = world
    res = run_benchmark("domains", pipelines=[str(spec_path)], datasets=[paths[0]], label="domain", seeds=1,
                        progress=False, log=lambda m: None, work_dir=root / "work-d").result
    (row,) = res.rows
    assert row.status == "ok", row.error
    assert row.details["k"] == 3 and "stage-1" in row.details["embedding"]
    assert any("magic: stage 1 is trained" in n for n in res.notes)


def test_generic_domains_and_speed_hooks_work_on_any_family(world):
    """What a family that brings no bench hooks of its own gets (here run on Magic)."""
    import numpy as np

    from stmm_core.benchmark.family_bench import generic_domains, generic_speed
    from stmm_core.pipeline.run import load_section
    from stmm_core.spec import load_spec
    from stmm_magic.family import MagicPipeline

    root, paths, spec_path = world
    spec = load_spec(spec_path)
    section = load_section(paths[0])
    sec, labels, k, details = generic_domains(MagicPipeline, spec, paths[0], section, "domain", "cpu",
                                              root / "generic-d")
    assert sec is section and k == 3 and labels.shape == (section.n_spots,) and len(np.unique(labels)) <= 3
    assert "GMM" in details["embedding"] and details["spec_hash"] == spec.hash()
    out = generic_speed(MagicPipeline, spec, paths[0], None, "cpu")
    assert out["metrics"]["total_s"] > 0 and out["metrics"]["peak_rss_mb"] > 0
