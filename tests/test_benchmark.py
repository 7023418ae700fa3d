"""`stmm benchmark`: failure isolation, results schema, reports, plots, dataset descriptors, CLI errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from stmm_core.benchmark import datasets as dsets
from stmm_core.benchmark.api import run_benchmark
from stmm_core.benchmark.pipelines import overrides_for, select
from stmm_core.benchmark.report import markdown, table
from stmm_core.benchmark.results import BenchmarkResult, Row, schema, summarise, validate
from stmm_core.errors import DataError, StmmError


@pytest.fixture(scope="module")
def section_paths(tmp_path_factory):
    from stmm_core.testing.synthetic import make_synthetic_adata

    d = tmp_path_factory.mktemp("bench-data")
    with_img = d / "syn_img.h5ad"
    no_img = d / "syn_noimg.h5ad"
    make_synthetic_adata(n_spots=200, n_genes=150, n_domains=3, seed=0).write_h5ad(with_img)
    make_synthetic_adata(n_spots=200, n_genes=150, n_domains=3, seed=1, image=False).write_h5ad(no_img)
    return with_img, no_img


@pytest.fixture(scope="module")
def domains_run(section_paths, tmp_path_factory):
    """One small domains benchmark: a working baseline, a pipeline that fails at run time (image-gmm on a
    section without an image), an unknown recipe and a method that does not cluster."""
    _, no_img = section_paths
    out = tmp_path_factory.mktemp("bench-out")
    outcome = run_benchmark("domains", pipelines=["expression-gmm", "image-gmm", "no-such-recipe", "hest-ridge"],
                            datasets=[str(no_img)], label="domain", seeds=2, out_dir=out,
                            work_dir=out / "work", progress=False, log=lambda m: None,
                            sets={"*": {"image.weights": "random"}})
    return outcome, out


def test_failed_runs_stay_as_rows(domains_run):
    outcome, _ = domains_run
    rows = outcome.result.rows
    by = {}
    for r in rows:
        by.setdefault(r.pipeline, []).append(r)
    assert [r.status for r in by["expression-gmm"]] == ["ok", "ok"]
    assert all(r.metrics["ari"] > 0.5 for r in by["expression-gmm"])  # 3 clean synthetic domains
    assert all(r.status == "failed" and "no image" in r.error for r in by["image-gmm"])
    assert all(r.status == "failed" and "unknown recipe 'no-such-recipe'" in r.error for r in by["no-such-recipe"])
    assert all(r.status == "not applicable" for r in by["hest-ridge"])
    summ = {(s.pipeline, s.metric): s for s in outcome.result.summary}
    assert summ[("expression-gmm", "ari")].n == 2 and summ[("expression-gmm", "ari")].n_failed == 0
    assert summ[("image-gmm", "ari")].mean is None and summ[("image-gmm", "ari")].n_failed == 2
    assert ("hest-ridge", "ari") not in summ


def test_json_validates_against_its_schema(domains_run):
    _, out = domains_run
    data = json.loads((out / "results" / "domains.json").read_text())
    sch = json.loads((out / "results" / "schema.json").read_text())
    assert sch == json.loads(json.dumps(schema()))
    assert validate(data, sch) == []
    assert data["result_version"] == 1 and data["environment"]["torch"]
    assert {p["name"]: p["spec_hash"] is not None for p in data["pipelines"]}["expression-gmm"]
    broken = json.loads(json.dumps(data))
    del broken["rows"][0]["status"]
    broken["seeds"] = ["zero"]
    problems = validate(broken, sch)
    assert any("missing 'status'" in p for p in problems) and any("seeds[0]" in p for p in problems)
    BenchmarkResult.model_validate(data)  # and it round-trips through the model
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(data, sch)


def test_markdown_and_table(domains_run):
    outcome, out = domains_run
    md = markdown(outcome.result)
    lines = md.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| pipeline |"))
    assert lines[header] == "| pipeline | dataset | runs | ari | nmi |"
    assert lines[header + 1] == "|---|---|---|---|---|"
    gmm = next(ln for ln in lines if ln.startswith("| expression-gmm |"))
    assert len(gmm.split("|")) == len(lines[header].split("|")) and "±" in gmm
    assert "Failed runs" in md and "no-such-recipe" in md
    assert "expression-gmm" in table(outcome.result)
    combined = (out / "RESULTS.md").read_text()
    assert "## `domains`" in combined and "plots/domains-scores.png" in combined


def test_plots_are_written(domains_run):
    outcome, out = domains_run
    names = sorted(p.name for p in outcome.plots)
    assert names == ["domains-maps-syn_noimg.png", "domains-scores.png"]
    for p in outcome.plots:
        blob = p.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000


def test_summary_mean_sd_and_nan():
    rows = [Row(pipeline="a", dataset="d", seed=s, status="ok", metrics={"ari": v}) for s, v in enumerate([0.2, 0.4])]
    rows.append(Row(pipeline="a", dataset="d", seed=2, status="ok", metrics={"ari": None}))
    rows.append(Row(pipeline="a", dataset="d", seed=3, status="failed", error="boom"))
    (s,) = summarise(rows, ["ari"])
    assert math.isclose(s.mean, 0.3) and math.isclose(s.sd, math.sqrt(0.02)) and s.n == 2 and s.n_failed == 1


def test_dataset_sha256_is_checked(tmp_path, monkeypatch):
    f = tmp_path / "sec.h5ad"
    f.write_bytes(b"not really an h5ad")
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    ok = dsets.resolve(dsets.DatasetDescriptor(name="x", path=str(f), sha256=good))
    assert ok.verified and ok.local_path == str(f)
    with pytest.raises(DataError, match="sha256"):
        dsets.resolve(dsets.DatasetDescriptor(name="x", path=str(f), sha256="0" * 64))
    # download address (file:// here, offline) with its checksum, into the cache folder
    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    got = dsets.resolve(dsets.DatasetDescriptor(name="remote", url=f.as_uri(), sha256=good))
    assert got.verified and got.local_path.startswith(str(tmp_path / "cache"))
    with pytest.raises(DataError, match="sha256"):
        dsets.resolve(dsets.DatasetDescriptor(name="remote2", url=f.as_uri(), sha256="1" * 64))
    assert not (tmp_path / "cache" / "datasets" / "remote2").exists() or \
        not any((tmp_path / "cache" / "datasets" / "remote2").iterdir())
    with pytest.raises(ValueError, match="sha256"):
        dsets.DatasetDescriptor(name="y", url="https://example.org/a.h5ad")


def test_registered_and_user_datasets(section_paths, monkeypatch, tmp_path):
    with_img, _ = section_paths
    names = [d.name for d in dsets.select(["her2st-C*"], [])]
    assert names == ["her2st-C2", "her2st-C3", "her2st-C4", "her2st-C5", "her2st-C6"]
    (user,) = dsets.select([str(with_img)], [], label="domain")
    assert user.name == "syn_img" and user.label == "domain" and user.sha256 is None
    assert dsets.resolve(user).local_path == str(with_img.resolve())
    monkeypatch.setenv("STMM_DATA", str(tmp_path))
    with pytest.raises(DataError, match="STMM_DATA"):
        dsets.resolve(dsets.BUILTIN["dlpfc-151676"])
    with pytest.raises(DataError, match="did you mean dlpfc-151676"):
        dsets.select(["dlpfc-15167"], [])


def test_registered_dataset_checksums_match_shared_data(shared_data, monkeypatch):
    monkeypatch.setenv("STMM_DATA", str(shared_data))
    for name in ("dlpfc-151676", "dlpfc-151675", "her2st-C2", "her2st-A1"):
        assert dsets.resolve(dsets.BUILTIN[name]).verified


def test_override_rules_apply_where_the_setting_exists():
    spec = {"components": {"image": {"name": "resnet50"}, "gene": {"name": "hvg"}}, "train": {"epochs": 5}}
    rules = {"*": {"image.weights": "random", "train.stage1.epochs": 1}, "stereo*": {"train.epochs": 3},
             "x": {"gene.pca": 10}}
    assert overrides_for("stereomm", spec, rules) == {"image.weights": "random", "train.epochs": 3}
    assert overrides_for("x", {"components": {"gene": {"name": "hvg"}}}, rules) == {"gene.pca": 10}
    # a glob rule skips a component that does not take the parameter (a weight-free image encoder)
    stain = {"components": {"image": {"name": "stain-stats", "params": {"scales": [1.0]}}}}
    resnet = {"components": {"image": {"name": "resnet50", "params": {"weights": "pretrained"}}}}
    assert overrides_for("stain", stain, rules) == {}
    assert overrides_for("r", resnet, rules) == {"image.weights": "random"}
    with pytest.raises(StmmError, match="matches no recipe"):
        select(["zzz*"], [])


def test_consensus_runs_are_their_own_rows(section_paths, tmp_path):
    _, no_img = section_paths
    pipes = select(["stereomm-expression+consensus2"], [])
    assert pipes[0].name == "stereomm-expression+consensus2" and pipes[0].spec.domains.consensus == 2
    outcome = run_benchmark("domains", pipelines=["stereomm-expression+consensus2"], datasets=[str(no_img)],
                            label="domain", seeds=1, seed_start=1, out_dir=tmp_path, work_dir=tmp_path / "w",
                            progress=False, log=lambda m: None,
                            sets={"*": {"train.epochs": 30, "gene.n_top_genes": 100}})
    (row,) = outcome.result.rows
    assert row.pipeline == "stereomm-expression+consensus2" and row.error is None, row.error
    cons = row.details["consensus"]
    assert cons["seeds"] == [2, 3] and len(cons["member_ari"]) == 2 and "seed_ari_mean" in cons
    assert any("consensus" in n for n in outcome.result.notes)


def test_fold_suites_need_two_sections(section_paths):
    with_img, _ = section_paths
    with pytest.raises(DataError, match="at least two sections"):
        run_benchmark("expression", pipelines=["hest-ridge"], datasets=[str(with_img)], progress=False,
                      log=lambda m: None)


def test_identity_graph_model_returns_its_input():
    import torch

    from stmm_core.plugins import get_catalogue

    model = get_catalogue().get("graph_model", "identity").build({})
    model.setup(4, 4, 3)
    x = torch.randn(3, 4)
    out = model(x)
    assert torch.equal(out.mu, x) and float(model.loss(out, x)["loss"].detach()) == 0.0
    fusion = get_catalogue().get("fusion", "image-only").build({})
    fusion.setup(2, 5)
    img = torch.randn(3, 2)
    assert torch.equal(fusion(img, torch.randn(3, 5)), img) and fusion.out_dim == 2
    with pytest.raises(StmmError, match="needs an image encoder"):
        fusion.setup(None, 5)


@pytest.mark.parametrize("argv, needle", [
    (["benchmark", "domainz"], "unknown benchmark suite 'domainz' (did you mean 'domains'?)"),
    (["benchmark", "domains", "--datasets", "dlpfc-99"], "unknown dataset 'dlpfc-99'"),
    (["benchmark", "domains", "--format", "xml"], "--format 'xml'"),
    (["benchmark", "domains", "--datasets", "dlpfc-99"], "--datasets"),
    (["benchmark", "domains", "-p", "expression-gmm,expression-gmm+consensus0"], "+consensus0 needs 2…100 seeds"),
    (["benchmark", "domains", "-p", "expression-gmm+consensus101"], "+consensus101 needs 2…100 seeds"),
    (["benchmark", "domains", "-p", "expression-gmm+consensusX"], "RECIPE+consensusN"),
    (["benchmark", "domains", "-p", "expression-gmm+consensus2-bogus"], "RECIPE+consensusN"),
    (["benchmark", "domains", "-p", "magic+consensus2"], "family has no consensus domains"),
])
def test_cli_bad_names_give_one_clear_error(argv, needle, capsys):
    from stmm_core.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_two_datasets_with_one_file_name_both_run(section_paths, tmp_path):
    """A/sec.h5ad and B/sec.h5ad are two datasets (the second named sec_2); one path given twice runs once."""
    import shutil

    from stmm_core.benchmark.datasets import select

    _, no_img = section_paths
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
        shutil.copy(no_img, tmp_path / sub / "sec.h5ad")
    a, b = str(tmp_path / "A" / "sec.h5ad"), str(tmp_path / "B" / "sec.h5ad")
    picked = select([a, b, a], [], label="domain")
    assert [d.name for d in picked] == ["sec", "sec_2"]
    assert [d.path for d in picked] == [str(Path(a).resolve()), str(Path(b).resolve())]


def test_benchmark_refuses_a_folder_of_other_files(section_paths, capsys, tmp_path):
    from stmm_core.cli.main import main

    _, no_img = section_paths
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["benchmark", "domains", "-p", "expression-gmm", "-d", str(no_img), "--label", "domain",
                 "--seeds", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds other files and no benchmark results" in err and "-o" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_cli_markdown_output(section_paths, capsys, tmp_path):
    from stmm_core.cli.main import main

    _, no_img = section_paths
    rc = main(["benchmark", "domains", "-p", "expression-gmm", "-d", str(no_img), "--label", "domain", "--seeds", "1",
               "--format", "json", "--work", str(tmp_path)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["suite"] == "domains" and data["rows"][0]["status"] == "ok"
    assert validate(data, schema()) == []
    assert np.isfinite(data["rows"][0]["metrics"]["ari"])


def test_fold_subset_and_models_shared_between_suites(tmp_path):
    """Leave-one-out folds restricted with ``folds``; ``retrieval`` reuses what ``expression`` computed."""
    from stmm_core.testing.synthetic import make_synthetic_adata

    paths = []
    for i in range(3):
        p = tmp_path / f"sec{i}.h5ad"
        make_synthetic_adata(n_spots=90, n_genes=120, n_domains=3, seed=10 + i).write_h5ad(p)
        paths.append(str(p))
    kw = dict(pipelines=["hest-ridge", "expression-gmm"], datasets=paths, folds=["sec1"], progress=False,
              log=lambda m: None, work_dir=tmp_path / "work",
              sets={"hest-ridge": {"decoder.n_targets": 60, "gene.n_genes": 32}})
    expr = run_benchmark("expression", **kw).result
    (row,) = [r for r in expr.rows if r.pipeline == "hest-ridge"]
    assert row.status == "ok" and row.fold == "sec1" and -1 <= row.metrics["pearson_all"] <= 1
    assert row.details["n_targets"] == 60 and "reused" not in row.details
    assert [r.status for r in expr.rows if r.pipeline == "expression-gmm"] == ["not applicable"]
    assert {s.dataset for s in expr.summary} == {"1 of 3 folds (sec1)"}
    retr = run_benchmark("retrieval", **kw).result
    (row2,) = [r for r in retr.rows if r.pipeline == "hest-ridge"]
    assert row2.details["reused"].endswith("eval.json")
    assert math.isclose(row2.metrics["chance_top1"], 1 / 90) and 0 <= row2.metrics["top5"] <= 1
    with pytest.raises(DataError, match="not among the datasets"):
        run_benchmark("expression", **{**kw, "folds": ["sec9"]})


def test_shards_merge_into_one_result(domains_run):
    from stmm_core.benchmark.results import merge

    outcome, _ = domains_run
    res = outcome.result
    a = res.model_copy(update={"rows": [r for r in res.rows if r.pipeline == "expression-gmm"], "command": "A"})
    b = res.model_copy(update={"rows": [r for r in res.rows if r.pipeline != "expression-gmm"], "command": "B"})
    merged = merge([a, b])
    assert merged.command == "A ; B" and len(merged.rows) == len(res.rows)
    key = lambda s: (s.pipeline, s.dataset, s.metric)  # noqa: E731
    assert sorted(map(key, merged.summary)) == sorted(map(key, res.summary))
    assert {key(s): s.mean for s in merged.summary} == {key(s): s.mean for s in res.summary}
    assert validate(json.loads(merged.model_dump_json()), schema()) == []


def test_merge_keeps_different_specs_apart(domains_run):
    from stmm_core.benchmark.results import merge

    res = domains_run[0].result
    later = res.model_copy(update={"pipelines": [p.model_copy(update={"spec_hash": "f" * 64}) for p in res.pipelines]})
    merged = merge([res, later])
    names = {s.pipeline for s in merged.summary}
    assert "expression-gmm" in names and "expression-gmm@ffffffff" in names
    assert any("different spec" in n for n in merged.notes)


def test_merging_fold_shards_labels_the_union_of_folds(domains_run):
    """Shards that each evaluated some held-out sections merge into one pooled row named after all of them."""
    from stmm_core.benchmark.results import DatasetRecord, Row, merge, summarise

    base = domains_run[0].result
    datasets = [DatasetRecord(name=n, path=f"/x/{n}.h5ad") for n in ("s1", "s2", "s3")]

    def shard(folds: list[str], command: str):
        rows = [Row(pipeline="hest-ridge", dataset=f, fold=f, seed=1, status="ok", metrics={"ari": v})
                for f, v in zip(folds, (0.2, 0.4))]
        label = f"{len(folds)} of 3 folds ({', '.join(folds)})"
        groups = {d.name: label for d in datasets}
        return base.model_copy(update={"rows": rows, "datasets": datasets, "command": command,
                                       "summary": summarise(rows, ["ari"], groups), "metrics": ["ari"]})

    partial = merge([shard(["s1"], "A"), shard(["s2"], "B")])
    assert {s.dataset for s in partial.summary} == {"2 of 3 folds (s1, s2)"}
    full = merge([shard(["s1"], "A"), shard(["s2", "s3"], "B")])
    (row,) = [s for s in full.summary if s.metric == "ari"]
    assert row.dataset == "3 folds (s1, s2, s3)" and row.n == 3
    # a row run on some folds only says so in the report, although it pools under the group's label
    from stmm_core.benchmark.report import summary_grid

    extra = Row(pipeline="stage1-ridge", dataset="s2", fold="s2", seed=1, status="ok", metrics={"ari": 0.3})
    rows = full.rows + [extra]
    groups = {d.name: "3 folds (s1, s2, s3)" for d in datasets}
    grid = summary_grid(full.model_copy(update={"rows": rows, "summary": summarise(rows, ["ari"], groups)}))[1]
    labels = {r[0]: r[1] for r in grid}
    assert labels == {"hest-ridge": "3 folds (s1, s2, s3)", "stage1-ridge": "1 of 3 folds (s2)"}, labels
