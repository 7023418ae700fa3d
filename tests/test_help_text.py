"""Help reads like a tool: plain metavars, no Python types or ranges, a plain usage line, an example under every
command; ``stmm info`` prints readable text and the raw record with ``--json``."""

from __future__ import annotations

import json
import re

PYTHONISH = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|int range|float range)>|\[x[<>]=|\{[a-z_]+\}")


def _help(cmd: list[str], capsys) -> str:
    from stmm_core.cli.main import main

    assert main([*cmd, "--help"]) == 0
    return capsys.readouterr().out


def test_every_command_help_is_plain_and_has_an_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    _help = lambda cmd: globals()["_help"](cmd, capsys)  # noqa: E731
    top = _help([])
    names = [ln.split()[1] for ln in top.splitlines() if ln.startswith("│ ") and len(ln.split()) > 2
             and ln.split()[1].isalpha() and ln.split()[1] not in ("Show", "Print")]
    assert {"run", "fit", "compose", "info", "list"} <= set(names), names
    for name in names:
        text = _help([name])
        assert not PYTHONISH.search(text), (name, PYTHONISH.search(text).group(0))
        assert "Examples:" in text and f"stmm {name}" in text.split("Examples:")[1], name
    run = _help(["run"])
    assert "Usage: stmm run [OPTIONS] RECIPE" in run
    assert re.search(r"--data\s+PATH", run) and re.search(r"--n-domains\s+-k\s+K", run)
    assert re.search(r"--scale\s+FACTOR", run) and "1 for the full-resolution TIFF" in run


def test_info_is_a_table_and_json_on_request(capsys):
    from types import SimpleNamespace

    from stmm_core.cli.main import main

    def run_stmm(args):  # in-process: the same entry point, without a fresh interpreter per call
        code = main(args)
        return SimpleNamespace(returncode=code, stdout=capsys.readouterr().out)

    r = run_stmm(["info", "stereomm"])
    assert r.returncode == 0 and not r.stdout.lstrip().startswith("{")
    assert re.search(r"fusion\s+attention\s+img_weight=auto", r.stdout), r.stdout
    assert "defaults chosen:" in r.stdout
    r = run_stmm(["info", "stereomm", "--json"])
    assert json.loads(r.stdout)["spec"]["components"]["fusion"]["params"]["img_weight"] == "auto"
    r = run_stmm(["info", "vgae"])
    assert re.search(r"kl_weight\s+0.001\s+number 0.0…1000.0", r.stdout), r.stdout
    r = run_stmm(["info", "uni"])
    assert re.search(r"license\s+cc-by-nc-nd-4.0", r.stdout) and "--encoder uni" in r.stdout
