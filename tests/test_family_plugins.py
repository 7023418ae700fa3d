"""Pipeline families are plug-ins: registered through ``stmm_pipeline_families`` (metadata only), listed by
``stmm list --kind pipeline`` / ``stmm info``, a broken one reported and skipped, specs validated with the family's
slots and train schema, commands refusing a family without the capability they need with one message."""

from __future__ import annotations

import json
import types

import pytest
from pydantic import BaseModel, ConfigDict

from stmm_core import hookimpl
from stmm_core.cli.main import main
from stmm_core.errors import SpecError, StmmError
from stmm_core.family import FamilyInfo
from stmm_core.plugins import PluginRegistry


class EchoTrain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    rounds: int = 3


def _family_module(**overrides):
    info = dict(name="echo", summary="test family", slots={"gene": ("gene_encoder", True)},
                impl="tests_echo_family:EchoPipeline", train_schema=EchoTrain, capabilities=("embedding",))
    info.update(overrides)
    mod = types.ModuleType("echo_plugin")

    @hookimpl
    def stmm_pipeline_families():
        return [FamilyInfo(**info)]

    mod.stmm_pipeline_families = stmm_pipeline_families
    return mod


def test_bundled_families_are_listed(capsys):
    assert main(["list", "--kind", "pipeline"]) == 0
    out = capsys.readouterr().out
    assert "graph-fusion" in out and "magic" in out and "[embedding, expression, scoring]" in out
    assert main(["list", "--kind", "pipeline", "--json"]) == 0
    names = {p["name"]: p for p in json.loads(capsys.readouterr().out)["pipelines"]}
    assert names["magic"]["package"] == "stmm" and names["graph-fusion"]["capabilities"] == ["embedding"]
    assert main(["info", "magic"]) == 0
    out = capsys.readouterr().out
    assert "pipeline family" in out and "stmm_magic.family:MagicPipeline" in out and "stage1" in out
    assert "prepare" in out  # the image slot needs a token encoder


def test_a_family_registers_through_the_hook_and_validates_specs(monkeypatch):
    import stmm_core.plugins as plugins

    reg = plugins.get_registry()
    fresh = PluginRegistry()
    for mod_name in ("stmm_genes.plugin",):  # the component the echo family's slot needs
        fresh.register_module(__import__(mod_name, fromlist=["x"]), name="genes")
    status = fresh.register_module(_family_module(), name="echo")
    assert status.status == "ok" and status.families == 1
    monkeypatch.setattr(plugins, "_REGISTRY", fresh)
    from stmm_core.spec import parse_spec

    spec = parse_spec({"pipeline": "echo", "components": {"gene": {"name": "hvg"}}, "train": {"rounds": 5}})
    assert spec.train.rounds == 5 and type(spec.train) is EchoTrain
    with pytest.raises(SpecError, match="rounds"):
        parse_spec({"pipeline": "echo", "components": {"gene": {"name": "hvg"}}, "train": {"rounds": "x"}})
    with pytest.raises(SpecError, match="the echo pipeline needs a 'gene' component"):
        parse_spec({"pipeline": "echo", "components": {}})
    with pytest.raises(SpecError, match="unknown component slot"):
        parse_spec({"pipeline": "echo", "components": {"gene": {"name": "hvg"}, "image": None}})
    # a family without a capability: one message naming the family and the capability
    from stmm_core.pipeline_base import check_options, family_of

    with pytest.raises(StmmError, match="needs a pipeline with the 'expression' capability.*'echo' pipeline family "
                                        "does not offer it"):
        family_of(spec).require("expression", "stmm predict")
    with pytest.raises(StmmError, match="--n-domains: not used by the 'echo' pipeline family"):
        check_options(spec, {"n_domains": 3, "image": None})
    assert reg is not fresh


@pytest.mark.parametrize("bad", [
    {"capabilities": ("telepathy",)},
    {"slots": {"gene": ("no_such_kind", True)}},
    {"impl": "no-colon"},
])
def test_a_broken_family_plugin_is_reported_and_skipped(bad, monkeypatch):
    monkeypatch.delenv("STMM_STRICT_PLUGINS", raising=False)
    reg = PluginRegistry()
    status = reg.register_module(_family_module(**bad), name="broken-family")
    assert status.status == "failed" and status.error
    assert "echo" not in reg.families and len(reg.families) == 0


def test_predict_refuses_a_family_without_expression(tmp_path, capsys):
    from stmm_core.cli.compose_cmd import compose_spec

    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text(compose_spec("stereomm-expression", None, {}).pretty_json())
    assert main(["predict", str(run), "--data", str(tmp_path / "x.h5ad"), "-o", str(tmp_path / "p.h5ad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'expression' capability" in err[0] and "'graph-fusion' pipeline family" in err[0]
