"""Bad command-line values, environment variables, output locations and specs: every case ends in exit code 2,
exactly one line on stderr (``stmm: error: …``), no traceback, a message naming the flag (or variable) that fixes
it, and no output left behind (:func:`bad_input_kit.refused`).

In-process on tiny synthetic sections (64 spots, 40 genes, 2 epochs). Data × readers and result sanity are in
``test_bad_data.py``; fault injection (SIGTERM, SIGKILL at read/encode/train/write) in
``test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bad_input_kit import FAST, _env, partials as _partials, refused, world  # noqa: F401 (fixtures)
from stmm_core.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")


# ------------------------------------------------------------------------------- class 1: CLI values
CLI_VALUES = [
    (["--seed", str(2**32)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--scale", "-1"], "--scale"),
    (["--scale", "0"], "--scale"),
    (["--scale", "nan"], "--scale"),
    (["-k", "0"], "--n-domains"),
    (["--device", "gpu"], "--device"),
    (["--quiet", "true"], "--quiet"),
    (["--nproc", "0"], "--nproc"),
    (["--stage", "3"], "--stage"),
]


@pytest.mark.parametrize("command", ["fit", "run"])
@pytest.mark.parametrize("extra,needle", CLI_VALUES, ids=[" ".join(c[0]) for c in CLI_VALUES])
def test_cli_values_are_checked_at_parse_time(world, capsys, tmp_path, command, extra, needle):
    head = ["fit", str(world["spec"])] if command == "fit" else ["run", "stereomm"]
    refused(capsys, [*head, *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *extra], needle)


EMBED_VALUES = [(["--scale", "-2"], "--scale"), (["--device", "tpu"], "--device")]


@pytest.mark.parametrize("extra,needle", EMBED_VALUES, ids=[" ".join(c[0]) for c in EMBED_VALUES])
def test_embed_values_are_checked_at_parse_time(world, capsys, tmp_path, extra, needle):
    refused(capsys, ["embed", str(world["run"]), *world["good"]["h5ad"], "-o", str(tmp_path / "e.h5ad"), *extra],
            needle)


def test_other_commands_check_values(world, capsys, tmp_path):
    refused(capsys, ["predict", str(world["run"]), "--image", "x.png", "--scale", "0", "-o", str(tmp_path / "p.h5ad")],
            "--scale")
    refused(capsys, ["predict", str(world["run"]), "--image", "x.png", "--tile-px", "-5",
                     "-o", str(tmp_path / "p.h5ad")], "--tile-px")
    refused(capsys, ["benchmark", "domains", "--seeds", "0"], "--seeds")
    refused(capsys, ["list", "nosuchthing"], "stmm list")
    refused(capsys, ["no-such-command"], "no such command")


# ------------------------------------------------------------------------------ class 2: environment
ENV_CASES = [
    ("STMM_TILE_WORKERS", "abc"), ("STMM_TILE_WORKERS", "-1"), ("STMM_THREADS", "0"), ("STMM_THREADS", "two"),
    ("STMM_CACHE_DIR", "<file>"), ("STMM_CACHE_DIR", "<under-file>"), ("STMM_PROGRESS", "maybe"),
]


@pytest.mark.parametrize("command", ["run", "embed", "compose"])
@pytest.mark.parametrize("name,value", ENV_CASES, ids=[f"{n}={v}" for n, v in ENV_CASES])
def test_environment_variables_are_checked_before_work(world, capsys, tmp_path, monkeypatch, command, name, value):
    afile = tmp_path / "afile"
    afile.write_text("x")
    value = {"<file>": str(afile), "<under-file>": str(afile / "cache")}.get(value, value)
    monkeypatch.setenv(name, value)
    out = tmp_path / ("o.h5ad" if command == "embed" else "o")
    args = {"run": ["run", "stereomm", *world["good"]["h5ad"], "-o", str(out)],
            "embed": ["embed", str(world["run"]), *world["good"]["h5ad"], "-o", str(out)],
            "compose": ["compose", "--recipe", "stereomm", "-o", str(tmp_path / "spec.json")]}[command]
    refused(capsys, args, name)
    assert not (tmp_path / "spec.json").exists()


# --------------------------------------------------------------------------- class 3: output location
def test_output_location_is_checked_before_any_work(world, capsys, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    unrelated = tmp_path / "mine"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("keep me")
    h5 = world["good"]["h5ad"]
    run = ["run", "stereomm", *h5]
    refused(capsys, [*run, "-o", str(afile)], "not a folder", untouched=[afile])
    refused(capsys, [*run, "-o", str(afile / "sub")], "is a file", untouched=[afile])
    refused(capsys, [*run, "-o", str(unrelated)], "not a stmm output", untouched=[unrelated])
    refused(capsys, [*run, "-o", str(unrelated), "--overwrite"], "not a stmm output", untouched=[unrelated])
    refused(capsys, [*run, "-o", str(world["run"])], "--overwrite", untouched=[world["run"]])
    emb = ["embed", str(world["run"]), *h5]
    refused(capsys, [*emb, "-o", str(tmp_path)], "is a folder", untouched=[tmp_path])
    refused(capsys, [*emb, "-o", str(afile / "e.h5ad")], "is a file", untouched=[afile])
    refused(capsys, [*emb, "-o", str(tmp_path / "e.csv")], ".h5ad")
    refused(capsys, ["compose", "--recipe", "stereomm", "-o", str(afile / "s.json")], "is a file", untouched=[afile])
    refused(capsys, ["compose", "--recipe", "stereomm", "-o", str(tmp_path)], "is a folder", untouched=[tmp_path])
    refused(capsys, ["pull", "org/name@" + "0" * 40, "-o", str(afile / "p"), "--offline"], "is a file")
    refused(capsys, ["benchmark", "domains", "-o", str(afile)], "not a folder", untouched=[afile])
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)  # '-o .' would replace the folder the user stands in
    refused(capsys, [*run, "-o", "."], "current folder", untouched=[empty])
    assert not _partials(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_output_folder(world, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(capsys, ["run", "stereomm", *world["good"]["h5ad"], "-o", str(ro / "out")], "cannot write")
        refused(capsys, ["embed", str(world["run"]), *world["good"]["h5ad"], "-o", str(ro / "e.h5ad")],
                "cannot write")
    finally:
        ro.chmod(0o755)


def test_probe_catches_an_unwritable_place_even_as_root(tmp_path, monkeypatch):
    """The output check writes a file (not os.access), so a read-only file system fails before any work."""
    from stmm_core import atomic
    from stmm_core.errors import StmmError

    def deny(self, data):  # noqa: ANN001 - Path.write_bytes signature
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", deny)
    with pytest.raises(StmmError, match="cannot write in .*Read-only file system"):
        atomic.check_output(tmp_path / "run")


def test_overwrite_replaces_a_run_whole_and_stale_partials_go(world, capsys, tmp_path):
    """Re-running into a run folder needs --overwrite, which replaces it whole: no old domains.png beside a new
    result without domains. A stale stage of a killed run (dead process id) is removed by the next run."""
    out = tmp_path / "run"
    args = ["fit", str(world["spec"]), *world["good"]["h5ad"], "-o", str(out), *FAST]
    assert main([*args, "-k", "3"]) == 0
    assert (out / "domains.png").is_file()
    stale = tmp_path / ".stmm-partial-run.999999999.deadbeef"
    stale.mkdir()
    (stale / "result.h5ad").write_text("half")
    legacy = out / ".stmm-partial-abc123"
    legacy.mkdir()
    assert main([*args, "--overwrite"]) == 0  # no -k: no domains this time
    assert not (out / "domains.png").exists() and (out / "result.h5ad").is_file()
    assert not stale.exists() and not legacy.exists() and not _partials(tmp_path)


# ------------------------------------------------------------------------------------- class 4: specs
def _spec_with(world, tmp_path, path: list[str], value) -> Path:
    data = json.loads(world["spec"].read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(data))
    return p


SPEC_CASES = [
    (["components", "graph", "params", "latent"], True, "latent: true is not a number"),
    (["train", "epochs"], True, "train.epochs: true is not a number"),
    (["train", "seed"], 2**32, "train.seed"),
    (["features", "image_pca"], False, "features.image_pca"),
    (["components", "task", "params", "n_init"], True, "n_init: true is not a number"),
]


@pytest.mark.parametrize("path,value,needle", SPEC_CASES, ids=[".".join(c[0][-2:]) for c in SPEC_CASES])
def test_bad_spec_values(world, capsys, tmp_path, path, value, needle):
    spec = _spec_with(world, tmp_path, path, value)
    refused(capsys, ["fit", str(spec), *world["good"]["h5ad"], "-o", str(tmp_path / "o")], needle)


def test_spec_path_problems_and_compose_never_writes_what_fit_rejects(world, capsys, tmp_path):
    h5 = world["good"]["h5ad"]
    msg = refused(capsys, ["fit", str(tmp_path), *h5, "-o", str(tmp_path / "o")], "is a folder, not a spec file")
    assert "stmm compose" in msg
    msg = refused(capsys, ["fit", str(world["run"].parent), *h5, "-o", str(tmp_path / "o")], "folder")
    msg = refused(capsys, ["compose", "--recipe", "magic", "--encoder", "stain", "-o", str(tmp_path / "m.json")],
                  "token image encoder")
    refused(capsys, ["compose", "--recipe", "magic", "--gene", "hvg", "-o", str(tmp_path / "m.json")],
            "token gene encoder")
    refused(capsys, ["compose", "--recipe", "stereomm", "--set", "graph.latent=true", "-o", str(tmp_path / "m.json")],
            "latent")
    refused(capsys, ["compose", "--encoder", "none", "--fuse", "image-only", "-o", str(tmp_path / "m.json")],
            "--encoder resnet50")
    refused(capsys, ["compose", "--recipe", "image-gmm", "--encoder", "none", "-o", str(tmp_path / "m.json")],
            "'image' slot")


def test_pull_says_the_network_is_unreachable_quickly(capsys, tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a local port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    msg = refused(capsys, ["pull", "org/name", "-o", str(tmp_path / "p")], "--offline")
    assert "cannot reach" in msg and time.perf_counter() - t0 < 10


def test_model_card_never_publishes_meaningless_scores(world):
    """An older run folder whose metrics hold 'ARI 1.000' from a single class (or no labelled spot) does not
    carry it into the model card that push publishes."""
    from stmm_core.hub.card import render_card
    from stmm_core.spec import load_spec

    spec = load_spec(world["spec"])
    bad = {"clustering": {"ari": 1.0, "nmi": 1.0, "n_labelled": 0, "n_unlabelled": 64, "n_true_domains": 0,
                          "label_column": "x"}, "n_domains": 3}
    one = {"clustering": {**bad["clustering"], "n_labelled": 64, "n_true_domains": 1}, "n_domains": 3}
    for metrics in (bad, one):
        card = render_card(spec, metrics)
        assert " ARI " not in card and "results:" not in card and "- ari" not in card
    good = {"clustering": {**bad["clustering"], "ari": 0.5, "n_labelled": 64, "n_true_domains": 3}, "n_domains": 3}
    assert "ARI 0.500" in render_card(spec, good)


def test_stale_stage_removal_is_specific_to_its_target(tmp_path):
    """Only dead writers' stages of the same target go; a live writer's stage and other targets' stay."""
    from stmm_core.atomic import remove_stale_partials

    dead = tmp_path / ".stmm-partial-run.999999999.deadbeef"
    live = tmp_path / f".stmm-partial-run.{os.getpid()}.0123abcd"
    other = tmp_path / ".stmm-partial-run.v2.999999999.deadbeef"
    dead_file = tmp_path / ".stmm-partial-e.h5ad.999999999.deadbeef.h5ad"
    for p in (dead, live, other):
        p.mkdir()
    dead_file.write_text("x")
    remove_stale_partials(tmp_path / "run")
    remove_stale_partials(tmp_path / "e.h5ad")
    assert not dead.exists() and not dead_file.exists() and live.exists() and other.exists()
