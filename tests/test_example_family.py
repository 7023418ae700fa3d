"""A new pipeline family from a package of its own (examples/stmm-bleep), with no change to the core.

The package is installed on its own (``pip install --no-deps --target SITE``: its pyproject's ``stmm`` entry
point is all that connects it), then, in fresh processes on synthetic sections:
``stmm list --kind pipeline`` and ``stmm info bleep`` show the family; its slots (catalogue components by name)
refuse one that lacks what it needs (``stmm compose``); ``stmm benchmark expression`` and ``stmm benchmark
retrieval`` run it beside ``magic`` on the same fold; ``stmm fit SPEC --data …`` writes the same weights, bit for
bit, as the benchmark's fit of the same spec in another process; the run folder reloads through the core
(``load_trained``) and survives a push to and a pull by commit from a loopback Hub with identical predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "stmm-bleep"
TINY_BLEEP = ["train.epochs=15", "train.n_targets=30", "train.n_eval_hvg=8", "train.k=10", "gene.n_top_genes=40"]
# magic shrunk to a seconds-long fit (as tests/magic_tiny.py), addressed to the magic row only
TINY_MAGIC = ["image.img_size=32", "image.hidden=[16]", "image.out_dim=16", "gene.n_genes=16", "gene.dim=16", "gene.depth=1",
              "gene.heads=2", "gene.dim_head=8", "gene.out_dim=16", "contrastive.embed_dim=16",
              "contrastive.queue_size=32", "fusion.dim=16", "fusion.heads=2", "decoder.n_targets=12",
              "decoder.dim=16", "decoder.heads=2", "decoder.expansion=[16]", "decoder.n_eval_hvg=5",
              "train.stage1.epochs=1", "train.stage1.batch_size=16", "train.stage2.epochs=1",
              "train.stage2.batch_size=16"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package installed on its own into a fresh folder (built from a copy: the checkout stays clean)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("bleep-install")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"the example package could not be installed here: {r.stderr[-500:]}")
    return target


@pytest.fixture(scope="module")
def env(site, tmp_path_factory) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "STMM_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "STMM_THREADS": "1", "STMM_PROGRESS": "0",
            "STMM_CACHE_DIR": str(tmp_path_factory.mktemp("bleep-cache"))}


@pytest.fixture(scope="module")
def sections(tmp_path_factory) -> list[Path]:
    """Three interleaved thirds of one synthetic section: image colour and expression follow the same domains."""
    from stmm_core.testing.synthetic import make_synthetic_adata

    folder = tmp_path_factory.mktemp("bleep-data")
    adata = make_synthetic_adata(n_spots=225, n_genes=60, n_domains=3, seed=4, image_scale=0.2, mean_counts=20.0,
                                 marker_fraction=0.5, dispersion=10.0)
    paths = []
    for i in range(3):
        path = folder / f"sec{i}.h5ad"
        adata[i::3].copy().write_h5ad(path)
        paths.append(path)
    return paths


def _stmm(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "stmm_core", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=600)
    assert r.returncode == 0, f"stmm {' '.join(map(str, args))}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_installed_family_is_listed_and_described(env):
    out = _stmm(env, "list", "--kind", "pipeline").stdout
    line = next(x for x in out.splitlines() if x.split()[1:2] == ["bleep"])
    assert "stmm-bleep" in line and "expression" in line and "scoring" in line
    assert any(x.split()[1:2] == ["magic"] for x in out.splitlines())
    info = _stmm(env, "info", "bleep").stdout
    assert "stmm_bleep.family:BleepPipeline" in info and "predict_temperature" in info
    assert "image_encoder" in info and "gene_encoder" in info


def test_its_slots_refuse_a_component_that_lacks_what_the_family_needs(env, tmp_path):
    r = subprocess.run([sys.executable, "-m", "stmm_core", "compose", "--recipe", "bleep", "--gene", "performer",
                        "-o", str(tmp_path / "bad.json")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "gene encoder with a saved state" in r.stderr and not (tmp_path / "bad.json").exists()


@pytest.fixture(scope="module")
def bench(env, sections, tmp_path_factory) -> dict[str, Path]:
    """``stmm benchmark expression`` then ``retrieval`` with bleep beside magic on one fold (sec2 held out)."""
    tmp = tmp_path_factory.mktemp("bleep-bench")
    sets = [a for s in TINY_MAGIC for a in ("--set", f"magic:{s}")]
    sets += [a for s in TINY_BLEEP for a in ("--set", f"bleep:{s}")]
    common = ["-p", "bleep,magic", *[a for p in sections for a in ("-d", str(p))], "--folds", "sec2",
              "--work", tmp / "work", "-o", tmp / "out", *sets]
    for suite in ("expression", "retrieval"):
        _stmm(env, "benchmark", suite, *common)
    return {"out": tmp / "out", "work": tmp / "work"}


def test_benchmark_expression_and_retrieval_run_it_beside_magic(bench):
    for suite, key in (("expression", "pearson_hvg50"), ("retrieval", "top1")):
        res = json.loads((bench["out"] / "results" / f"{suite}.json").read_text())
        rows = {r["pipeline"]: r for r in res["rows"]}
        assert set(rows) == {"bleep", "magic"}, rows.keys()
        for name, row in rows.items():
            assert row["status"] == "ok", (suite, name, row.get("error"))
            assert isinstance(row["metrics"][key], float), (suite, name, row["metrics"])
        if suite == "retrieval":  # each family's own report line reaches the suite's notes
            assert any(n.startswith("bleep:") for n in res["notes"]), res["notes"]
            assert any(n.startswith("magic:") for n in res["notes"]), res["notes"]
    # the retrieval suite reused the model the expression suite trained (one fit per pipeline and fold)
    assert len(list((bench["work"] / "folds").glob("bleep-*/seed0/sec2/eval.json"))) == 1


def test_stmm_fit_trains_it_and_the_run_folder_reloads_bit_for_bit(env, site, sections, bench, tmp_path,
                                                                   monkeypatch, hub_client):
    (fold_run,) = (bench["work"] / "folds").glob("bleep-*/seed0/sec2/run")  # the benchmark's fit of sec0 + sec1
    out = _stmm(env, "fit", fold_run / "spec.json", "--data", sections[0], sections[1], "-o", tmp_path / "run")
    assert "bleep: 2 training section(s)" in out.stdout + out.stderr
    run = tmp_path / "run"
    for name in ("spec.json", "model.safetensors", "preprocess.json", "metrics.json", "manifest.json", "README.md"):
        assert (run / name).is_file(), name
    # the benchmark trained the same spec on the same sections in another process: the same weights, bit for bit
    from safetensors.numpy import load_file

    a, b = load_file(str(run / "model.safetensors")), load_file(str(fold_run / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)

    # load it here (a third process) through the core, with the package registered as its entry point would
    from stmm_core import plugins
    from stmm_core.data.readers import read_section
    from stmm_core.expression_metrics import pearson_per_gene, retrieval_topk
    from stmm_core.pipeline_base import embed, load_trained, predict_expression, score

    monkeypatch.syspath_prepend(str(site))
    import stmm_bleep.plugin

    reg = plugins.PluginRegistry()
    reg.load_entry_points()
    if "bleep" not in reg.families:
        reg.register_module(stmm_bleep.plugin, name="bleep", package="stmm-bleep")
    monkeypatch.setattr(plugins, "_REGISTRY", reg)
    test = read_section(sections[2])
    pred = predict_expression(load_trained(run), test)
    np.testing.assert_array_equal(pred.values, predict_expression(load_trained(fold_run), test).values)
    assert pred.values.shape == (75, 30) and len(pred.genes) == 30 and pred.target_sum == 1e4
    from stmm_bleep.genes import log1p_targets

    truth = log1p_targets(test, pred.genes, pred.target_sum)
    assert pearson_per_gene(pred.values, truth)["mean"] > 0.3  # it learned image -> expression (training mean: 0)
    pipe = load_trained(run)
    assert retrieval_topk(score(pipe, test))["top5"] > 3 * 5 / 75  # own expression in the top 5, well above chance
    assert embed(pipe, test)[0].shape == (75, 64)
    # a saved pipeline like any other: pushed to the (loopback) Hub, pulled by commit, the same predictions
    from stmm_core.hub.remote import pull, push

    commit = push(run, "lab/bleep-tiny")["commit"]
    pull(f"lab/bleep-tiny@{commit}", tmp_path / "pulled")
    np.testing.assert_array_equal(predict_expression(load_trained(tmp_path / "pulled"), test).values, pred.values)
