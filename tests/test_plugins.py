"""Plug-in discovery through entry points: a third-party component is listed and composable; a broken
plug-in is reported and skipped; strict mode makes it fatal."""

from __future__ import annotations

import json

from conftest import run_stmm


def test_builtin_plugins_load():
    r = run_stmm(["plugins", "--json"])
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    for name in ("vision", "genes", "fusion", "graph", "tasks", "registry"):
        assert rows[name]["status"] == "ok", rows[name]


def test_third_party_component_listed_and_composed(plugin_path, tmp_path):
    r = run_stmm(["list", "ward", "--json"], extra_path=plugin_path)
    assert r.returncode == 0, r.stderr
    comps = json.loads(r.stdout)["components"]
    assert [c["name"] for c in comps] == ["ward"]
    assert comps[0]["package"] == "stmm-example-plugin"
    out = tmp_path / "spec.json"
    r = run_stmm(["compose", "--task", "ward", "--set", "task.linkage=average", "-o", str(out)],
                 extra_path=plugin_path)
    assert r.returncode == 0, r.stderr
    spec = json.loads(out.read_text())
    assert spec["components"]["task"] == {"name": "ward", "params": {"linkage": "average"}}


def test_broken_plugin_reported_and_others_work(plugin_path):
    r = run_stmm(["plugins", "--json"], extra_path=plugin_path)
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["package"] == "stmm-broken-plugin"
    assert "broken on purpose" in rows["broken"]["error"]
    assert rows["example"]["status"] == "ok"
    r = run_stmm(["plugins"], extra_path=plugin_path)
    assert "FAILED" in r.stdout and "failed to load" in r.stderr
    for args in (["list"], ["compose", "--recipe", "stereomm", "--dry-run"], ["info", "vgae"]):
        r = run_stmm(args, extra_path=plugin_path)
        assert r.returncode == 0, (args, r.stderr)


def test_strict_mode_makes_broken_plugin_fatal(plugin_path):
    r = run_stmm(["list"], extra_path=plugin_path, env={"STMM_STRICT_PLUGINS": "1"})
    assert r.returncode == 2
    assert "broken" in r.stderr and "STMM_STRICT_PLUGINS" in r.stderr


def test_in_process_registration_and_isolation():
    import types

    from stmm_core.catalogue import ComponentInfo
    from stmm_core.hookspecs import hookimpl
    from stmm_core.plugins import PluginRegistry
    from stmm_tasks.params import KMeansParams

    good = types.ModuleType("good_plugin")
    good.stmm_components = hookimpl(lambda: [ComponentInfo("km2", "task", "x.y:Z", KMeansParams, "demo")])
    bad = types.ModuleType("bad_plugin")

    def explode():
        raise ValueError("hook exploded")

    bad.stmm_components = hookimpl(explode)
    reg = PluginRegistry()
    assert reg.register_module(good).status == "ok"
    st = reg.register_module(bad)
    assert st.status == "failed" and "hook exploded" in st.error
    assert reg.catalogue.get("task", "km2").summary == "demo"
