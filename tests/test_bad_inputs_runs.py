"""Bad input found by a user-level sweep of `stmm run/fit` (several sections, consensus, output folder, disk):
each refused with one line naming the flag that fixes it and nothing written, or said in the run's warnings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bad_input_kit import FAST, _env, _section, world  # noqa: F401 (fixtures)
from bad_input_kit import refused
from stmm_core.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")


def test_sections_whose_label_names_differ_are_refused_when_k_comes_from_them(world, capsys, tmp_path):
    """Two sections labelled D0…D2 and L1…L3: K from the union (6) would count each domain twice."""
    a = world["adata"].copy()
    b = world["adata"].copy()
    b.obs_names = [f"b_{i}" for i in b.obs_names]
    b.obs["domain"] = b.obs["domain"].astype(str).map(lambda v: f"renamed-{v}")
    one, two = _section("h5ad", tmp_path, a, "one"), _section("h5ad", tmp_path, b, "two")
    args = ["fit", str(world["spec"]), "--data", one[1], two[1], "--labels", "domain"]
    msg = refused(capsys, [*args, "-o", str(tmp_path / "o"), *FAST], "--n-domains")
    assert "share no label name" in msg
    # the advice works: K given, the labels still score each section
    assert main([*args, "-k", "3", "-o", str(tmp_path / "o2"), *FAST]) == 0


def test_consensus_seeds_past_the_largest_seed_name_both_flags(world, capsys, tmp_path):
    msg = refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-k", "3", "--seed", "2147483648",
                           "--consensus", "2", "-o", str(tmp_path / "o"), *FAST], "--consensus 2")
    assert "--seed at most 2147483647" in msg


def test_overwrite_never_replaces_an_input_inside_the_output_folder(world, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    before = sorted(p.name for p in run.iterdir())
    refused(capsys, ["fit", str(world["spec"]), "--data", str(run / "result.h5ad"), "-k", "3", "-o", str(run),
                     "--overwrite", *FAST], "lies inside -o", untouched=[run])
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_full_disk_is_one_message_before_writing(world, capsys, tmp_path, monkeypatch):
    """shutil.disk_usage reports 1 MB free: refused naming -o before result.h5ad is written, nothing left."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 9 << 20, 1 << 20))
    out = tmp_path / "o"
    msg = refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-k", "3", "-o", str(out), *FAST],
                  "MB free on that disk")
    assert "give -o a folder on another disk" in msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_full_disk_is_said_before_the_fit_starts(world, capsys, tmp_path, monkeypatch):
    """The room check runs after reading and before training: the fit itself is never entered."""
    from collections import namedtuple

    import stmm_graph_fusion.fit as gf_fit

    def no_fit(*a, **k):
        raise AssertionError("the fit started although the disk cannot hold the result")

    monkeypatch.setattr(gf_fit, "fit_graph_fusion", no_fit)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 64 << 10))
    out = tmp_path / "deeper" / "o"
    msg = refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-k", "3", "-o", str(out), *FAST],
                  "MB free on that disk")
    assert "give -o a folder on another disk" in msg
    assert not out.exists()


def test_an_image_the_pipeline_does_not_encode_is_said(world, capsys, tmp_path):
    from stmm_core.cli.compose_cmd import compose_spec

    spec = tmp_path / "expr.json"
    spec.write_text(compose_spec("stereomm-expression", None, {"train.epochs": 2, "gene.n_top_genes": 30,
                                                               "gene.pca": 10}).pretty_json())
    he = Path(world["good"]["table"][1]).parent / "he.png"
    out = tmp_path / "o"
    data = world["good"]["h5ad"]
    assert main(["fit", str(spec), *data, "--image", str(he), "--scale", "0.1", "-k", "3", "-o", str(out), *FAST]) == 0
    warnings = json.loads((out / "metrics.json").read_text()).get("warnings", [])
    assert any("has no image encoder" in w and "--image" in w for w in warnings), warnings
