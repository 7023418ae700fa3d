"""Pipeline specs: frozen, unknown keys rejected, per-component parameter schemas, stable hash."""

from __future__ import annotations

import json

import pytest

from stmm_core.cli.compose_cmd import compose_spec
from stmm_core.errors import ComponentNotFound, SpecError
from stmm_core.spec import SPEC_VERSION, load_spec, parse_spec


def test_defaults_filled_and_hash_stable():
    a = compose_spec("stereomm")
    b = parse_spec(json.loads(a.canonical_json()))
    assert a.hash() == b.hash()
    assert a.canonical_json() == b.canonical_json()
    assert a.components["fusion"].params["dim"] > 0  # defaults filled from the component schema
    # key order in the input does not change the hash
    raw = json.loads(a.canonical_json())
    shuffled = dict(reversed(list(raw.items())))
    assert parse_spec(shuffled).hash() == a.hash()
    # a change of parameter does
    assert a.with_overrides({"fusion.dim": 8}).hash() != a.hash()


def test_frozen():
    spec = compose_spec("stereomm")
    with pytest.raises(Exception):
        spec.recipe = "other"  # type: ignore[misc]


def test_unknown_top_level_key_rejected():
    raw = json.loads(compose_spec("stereomm").canonical_json())
    raw["colour"] = "blue"
    with pytest.raises(SpecError, match="colour"):
        parse_spec(raw)


def test_unknown_param_rejected_by_component_schema():
    with pytest.raises(SpecError, match=r"fusion 'attention'.*dimm"):
        compose_spec("stereomm", sets={"fusion.dimm": 3})


def test_bad_param_value():
    with pytest.raises(SpecError, match="graph 'vgae'|graph_model 'vgae'"):
        compose_spec("stereomm", sets={"graph.conv": "transformer"})


def test_unknown_component_suggests():
    with pytest.raises(ComponentNotFound, match="did you mean 'resnet50'"):
        compose_spec("stereomm", {"image": "resnet5"})


def test_image_slot_optional():
    spec = compose_spec("stereomm", {"image": "none"})
    assert spec.components["image"] is None


def test_newer_spec_version(tmp_path):
    raw = json.loads(compose_spec("stereomm").canonical_json())
    raw["spec_version"] = SPEC_VERSION + 1
    raw["stmm_version"] = "9.0"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="upgrade stmm"):
        load_spec(path)


def test_missing_and_invalid_spec_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(bad)


def test_override_errors():
    with pytest.raises(SpecError, match="component.param=value"):
        compose_spec("stereomm", sets={"epochs": 3})
    with pytest.raises(SpecError, match="no 'decoder' component"):
        compose_spec("stereomm", sets={"decoder.x": 3})


def test_misspelt_parameters_get_a_suggestion_and_no_pydantic_noise():
    with pytest.raises(SpecError) as exc:
        compose_spec("stereomm-expression", None, {"train.epoch": 5})
    msg = str(exc.value)
    assert "unknown parameter 'train.epoch' (did you mean 'train.epochs'?)" in msg and "MagicTrainSpec" not in msg
    with pytest.raises(SpecError, match=r"unknown parameter 'latnet' \(did you mean 'latent'\?\)"):
        compose_spec("stereomm-expression", None, {"graph.latnet": 8})
    with pytest.raises(SpecError) as exc:
        compose_spec("stereomm-expression", None, {"train.epochs": 0})
    assert "train.epochs: Input should be greater than or equal to 1" in str(exc.value)
    assert "Value error" not in str(exc.value)
