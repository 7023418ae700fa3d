"""Bad and tricky inputs, parametrised over readers × commands: every case ends in exit code 2, exactly one line
on stderr (``stmm: error: …``), no traceback, a message naming the flag (or variable) that fixes it, and no output
left behind. Where a message suggests a fix, the fix is run and must work.

Everything runs in-process on tiny synthetic sections (64 spots, 40 genes, 2 epochs). Fault injection (SIGTERM,
SIGKILL at read/encode/train/write) is in ``test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from stmm_core.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")

READERS = ("h5ad", "table", "spaceranger")
FAST = ["-q", "--no-cache"]


# ------------------------------------------------------------------------------------------- data
def _adata(**kw):
    from stmm_core.testing.synthetic import make_synthetic_adata

    return make_synthetic_adata(n_spots=64, n_genes=40, n_domains=3, seed=0, **kw)


def _write_spaceranger(folder: Path, a, scalefactors: dict | None = None) -> Path:
    """A Space Ranger output folder: filtered_feature_bc_matrix.h5 + spatial/ (headerless positions list)."""
    import h5py
    import scipy.sparse as sp
    from PIL import Image

    folder.mkdir(parents=True)
    m = sp.csc_matrix(sp.csr_matrix(a.X).T)  # features × barcodes
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
        g["shape"] = np.array(m.shape)
        g["barcodes"] = np.array([s.encode() for s in a.obs_names])
        feat = g.create_group("features")
        feat["id"] = np.array([s.encode() for s in a.var_names])
        feat["name"] = np.array([s.encode() for s in a.var_names])
        feat["feature_type"] = np.array([b"Gene Expression"] * a.n_vars)
    sp_dir = folder / "spatial"
    sp_dir.mkdir()
    xy = np.asarray(a.obsm["spatial"])
    lines = [f"{bc},1,0,0,{y:.3f},{x:.3f}" for bc, (x, y) in zip(a.obs_names, xy)]
    (sp_dir / "tissue_positions_list.csv").write_text("\n".join(lines) + "\n")
    lib = a.uns["spatial"]["synthetic"]
    Image.fromarray(lib["images"]["hires"]).save(sp_dir / "tissue_hires_image.png")
    sf = dict(lib["scalefactors"]) if scalefactors is None else scalefactors
    (sp_dir / "scalefactors_json.json").write_text(json.dumps(sf))
    return folder


def _write_table(root: Path, a, name: str = "counts") -> tuple[Path, Path, Path]:
    """counts.csv + coords.csv + he.png (scale 0.1)."""
    import pandas as pd
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(a.X.todense())
    pd.DataFrame(counts, index=a.obs_names, columns=a.var_names).to_csv(root / f"{name}.csv")
    xy = np.asarray(a.obsm["spatial"])
    pd.DataFrame({"id": a.obs_names, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(root / f"{name}-coords.csv", index=False)
    Image.fromarray(a.uns["spatial"]["synthetic"]["images"]["hires"]).save(root / "he.png")
    return root / f"{name}.csv", root / f"{name}-coords.csv", root / "he.png"


def _section(kind: str, root: Path, a, name: str) -> list[str]:
    """Data arguments (``--data … [--coords …]``) for *a* written with reader *kind*."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "h5ad":
        p = root / f"{name}.h5ad"
        a.write_h5ad(p)
        return ["--data", str(p)]
    if kind == "table":
        counts, coords, _ = _write_table(root / name, a)
        return ["--data", str(counts), "--coords", str(coords)]
    return ["--data", str(_write_spaceranger(root / name, a))]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sections in every reader's format, a tiny spec with a weight-free image encoder, one finished run."""
    from stmm_core.cli.compose_cmd import compose_spec

    root = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STMM_PROGRESS", "0")
        mp.setenv("STMM_CACHE_DIR", str(root / "cache"))
        spec = compose_spec("stereomm", {"image": "stain-stats"},
                            {"train.epochs": 2, "gene.n_top_genes": 30, "gene.pca": 10, "task.n_init": 1})
        (root / "spec.json").write_text(spec.pretty_json())
        a = _adata()
        good = {k: _section(k, root / "good", a, k) for k in READERS}
        run = root / "run"
        assert main(["fit", str(root / "spec.json"), *good["h5ad"], "-o", str(run), "-k", "3", *FAST]) == 0
        yield {"root": root, "spec": root / "spec.json", "good": good, "adata": a, "run": run}


@pytest.fixture(autouse=True)
def _env(world, monkeypatch):
    monkeypatch.setenv("STMM_PROGRESS", "0")
    monkeypatch.setenv("STMM_CACHE_DIR", str(world["root"] / "cache"))


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".stmm-partial-*")]


def refused(capsys, args: list[str], needle: str, *, code: int = 2, untouched: list[Path] = ()) -> str:
    """Run ``stmm ARGS``: exit *code*, one stderr line naming *needle*, no traceback, nothing written."""
    capsys.readouterr()
    snapshot = {p: sorted(x.name for x in p.iterdir()) if p.is_dir() else p.exists() for p in untouched}
    rc = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, (args, err)
    assert len(lines) == 1 and lines[0].startswith("stmm: error: "), (args, err)
    assert "Traceback" not in err
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    if "-o" in args:
        out = Path(args[args.index("-o") + 1])
        if out not in snapshot:
            assert not out.exists() or (out.is_dir() and not any(out.iterdir())), f"{out} was written"
    for p, before in snapshot.items():
        assert (sorted(x.name for x in p.iterdir()) if p.is_dir() else p.exists()) == before, f"{p} changed"
    return lines[0]


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
            "compose": ["compose", "-o", str(tmp_path / "spec.json")]}[command]
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
    refused(capsys, ["compose", "-o", str(afile / "s.json")], "is a file", untouched=[afile])
    refused(capsys, ["compose", "-o", str(tmp_path)], "is a folder", untouched=[tmp_path])
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
    msg = refused(capsys, ["compose", "--recipe", "magic", "--image", "stain", "-o", str(tmp_path / "m.json")],
                  "token image encoder")
    refused(capsys, ["compose", "--recipe", "magic", "--gene", "hvg", "-o", str(tmp_path / "m.json")],
            "token gene encoder")
    refused(capsys, ["compose", "--set", "graph.latent=true", "-o", str(tmp_path / "m.json")], "latent")
    refused(capsys, ["compose", "--image", "none", "--fuse", "image-only", "-o", str(tmp_path / "m.json")],
            "--image resnet50")
    refused(capsys, ["compose", "--recipe", "image-gmm", "--image", "none", "-o", str(tmp_path / "m.json")],
            "'image' slot")


# ------------------------------------------------------------------------- class 5: data × readers
def _bad_data(kind: str, case: str, root: Path, world) -> list[str]:
    a = world["adata"].copy()
    if case == "lowres-coords":  # coordinates stored in lowres-image px (× 0.05) instead of full-res px
        a.obsm["spatial"] = np.asarray(a.obsm["spatial"]) * 0.05
    elif case == "degenerate-coords":  # every spot at (0, 0): a wrong or empty column
        a.obsm["spatial"] = np.zeros_like(np.asarray(a.obsm["spatial"]))
    return _section(kind, root, a, f"{kind}-{case}")


DATA_CASES = [("lowres-coords", [], "full-resolution pixels"),
              ("degenerate-coords", [], "distinct position"),
              ("good", ["-k", "65"], "--n-domains"),
              ("good", ["--labels", "nosuch"], "--labels")]


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("case,extra,needle", DATA_CASES, ids=[f"{c}{' '.join(e)}" for c, e, _ in DATA_CASES])
def test_bad_data_per_reader(world, capsys, tmp_path, kind, case, extra, needle):
    data = world["good"][kind] if case == "good" else _bad_data(kind, case, tmp_path, world)
    if kind == "table" and case in ("lowres-coords",):  # a table has no spot size: the image exposes the unit mix-up
        data = data + ["--image", str(Path(data[1]).parent / "he.png"), "--scale", "0.1"]
    refused(capsys, ["fit", str(world["spec"]), *data, "-o", str(tmp_path / "o"), *FAST, *extra], needle)


def test_scores_need_two_labelled_classes(world, capsys, tmp_path):
    """A label column with no labelled spot, or a single class, is refused (never ARI 1.000)."""
    a = world["adata"].copy()
    a.obs["empty"] = np.nan
    a.obs["one"] = "L1"
    a.obs["mostly_empty"] = ["L1" if i < 10 else "" for i in range(a.n_obs)]
    p = tmp_path / "labels.h5ad"
    a.write_h5ad(p)
    for col in ("empty", "one", "mostly_empty"):
        for k in ([], ["-k", "3"]):
            msg = refused(capsys, ["fit", str(world["spec"]), "--data", str(p), "--labels", col, *k,
                                   "-o", str(tmp_path / "o"), *FAST], "--labels")
            assert "--n-domains" in msg
    # the spaceranger reader's own obs column (every spot in_tissue=1) is a single class too
    refused(capsys, ["fit", str(world["spec"]), *world["good"]["spaceranger"], "--labels", "in_tissue",
                     "-o", str(tmp_path / "o"), *FAST], "single labelled class")


def test_scores_refused_at_the_metric(world):
    from stmm_core.errors import DataError
    from stmm_core.metrics import clustering_scores

    with pytest.raises(DataError, match="single labelled class"):
        clustering_scores(np.array(["a"] * 5), np.arange(5))
    with pytest.raises(DataError, match="no labelled spots"):
        clustering_scores(np.array([np.nan] * 5, dtype=object), np.arange(5))


@pytest.mark.parametrize("kind", ["h5ad", "spaceranger"])
def test_image_without_scale_factor_advice_works(world, capsys, tmp_path, kind):
    """'pass --scale S' is advised, and passing it works."""
    a = world["adata"].copy()
    if kind == "h5ad":
        del a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
        data = _section("h5ad", tmp_path, a, "noscale")
    else:
        data = ["--data", str(_write_spaceranger(tmp_path / "sr", a, {"spot_diameter_fullres": 55.0}))]
    out = tmp_path / "o"
    msg = refused(capsys, ["fit", str(world["spec"]), *data, "-o", str(out), *FAST], "--scale")
    assert "scale=" not in msg
    assert main(["fit", str(world["spec"]), *data, "-o", str(out), "--scale", "0.1", *FAST]) == 0
    assert (out / "result.h5ad").is_file()


def test_section_copied_away_from_its_image_advice_works(world, capsys, tmp_path):
    """HER2ST layout (uns['image'] path relative to the data folder): the image is missing after a copy; the
    advice '--image FILE --scale S' works, and an expression-only recipe does not need the image at all."""
    from PIL import Image

    a = world["adata"].copy()
    img = a.uns["spatial"]["synthetic"]["images"]["hires"]
    del a.uns["spatial"]
    a.uns["image"] = {"path_relative_to_her2st_dir": "ST-imgs/A1/he.png", "scale_fullres_to_image": 0.1}
    p = tmp_path / "copied" / "A1.h5ad"
    p.parent.mkdir()
    a.write_h5ad(p)
    he = tmp_path / "elsewhere.png"
    Image.fromarray(img).save(he)
    out = tmp_path / "o"
    msg = refused(capsys, ["fit", str(world["spec"]), "--data", str(p), "-o", str(out), *FAST], "--image FILE")
    assert "image=" not in msg
    assert main(["fit", str(world["spec"]), "--data", str(p), "-o", str(out), "--image", str(he),
                 "--scale", "0.1", *FAST]) == 0
    assert main(["run", "stereomm-expression", "--data", str(p), "-o", str(tmp_path / "expr"),
                 "--set", "train.epochs=2", *FAST]) == 0


def test_messages_name_cli_flags_not_python_keywords(world, capsys, tmp_path):
    counts, coords, he = _write_table(tmp_path / "t", world["adata"])
    spec = str(world["spec"])
    o = str(tmp_path / "o")
    for args, needle in [
        (["--data", str(counts)], "--coords"),
        (["--data", str(counts), "--coords", str(coords), "--scale", "0.1"], "--image"),
        (["--data", str(counts), "--coords", str(coords), "--image", str(he)], "--scale"),
        ([*world["good"]["h5ad"], "--counts-layer", "nosuch"], "--counts-layer"),
    ]:
        msg = refused(capsys, ["fit", spec, *args, "-o", o, *FAST], needle)
        for keyword in ("coords=", "scale=", "image=", "counts_layer="):
            assert f" {keyword}" not in msg.replace("(Python: ", "(Python:"), msg


# ------------------------------------------------------------------ class 6: sanity kept in the result
def test_non_integer_counts_are_a_recorded_warning(world, capsys, tmp_path):
    a = world["adata"].copy()
    a.X = a.X.astype(np.float32) * 0.37
    data = _section("h5ad", tmp_path, a, "normalised")
    out = tmp_path / "o"
    assert main(["fit", str(world["spec"]), *data, "-o", str(out), "-k", "3", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("non-integer" in w and "--counts-layer" in w for w in metrics["warnings"])


def test_domains_found_differ_from_k_is_said(world, capsys, tmp_path):
    from stmm_core.pipeline.run import summary_lines

    out = tmp_path / "o"
    assert main(["fit", str(world["spec"]), *world["good"]["h5ad"], "-o", str(out), "-k", "64", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_domains"] == 64
    found = metrics["n_domains_found"]
    metrics["files"] = []  # added by fit_to_dir after metrics.json is written
    text = "\n".join(summary_lines(metrics, out))
    if found != 64:
        assert any("domains found" in w for w in metrics["warnings"]) and f"{found} domains found" in text
    fake = {**metrics, "n_domains_found": 3}
    assert "3 domains found, not K=64" in "\n".join(summary_lines(fake, out))


def test_every_failed_benchmark_exits_non_zero(world, capsys, tmp_path):
    a = world["adata"].copy()
    a.obs["one"] = "L1"
    p = tmp_path / "one.h5ad"
    a.write_h5ad(p)
    capsys.readouterr()
    rc = main(["benchmark", "domains", "-p", str(world["spec"]), "-d", str(p), "--label", "one", "--seeds", "1",
               "-o", str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert rc == 2 and "every benchmark run failed" in err and "Traceback" not in err


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


def test_coordinates_in_image_pixels_advice_works(world, capsys, tmp_path):
    """A counts table whose positions are pixels of the image (not full resolution): the spots sit in one
    corner after scaling; the message says so and its '--scale 1' works."""
    a = world["adata"].copy()
    a.obsm["spatial"] = np.asarray(a.obsm["spatial"]) * 0.1  # the image's own pixels (scale 0.1)
    counts, coords, he = _write_table(tmp_path / "px", a)
    data = ["--data", str(counts), "--coords", str(coords), "--image", str(he)]
    out = tmp_path / "o"
    msg = refused(capsys, ["fit", str(world["spec"]), *data, "--scale", "0.1", "-o", str(out), *FAST], "corner")
    assert "--scale 1" in msg
    assert main(["fit", str(world["spec"]), *data, "--scale", "1", "-o", str(out), *FAST]) == 0


def test_non_image_and_uncreatable_cache(world, capsys, tmp_path, monkeypatch):
    """An .h5ad given to --image (Pillow 'opens' it as 0×0), and a feature cache that cannot be created, are
    refused before any work."""
    h5 = world["good"]["h5ad"]
    refused(capsys, ["fit", str(world["spec"]), *h5, "--image", h5[1], "--scale", "1", "-o", str(tmp_path / "o"),
                     *FAST], "--image")
    afile = tmp_path / "afile"
    afile.write_text("x")
    from stmm_core.data import cache

    monkeypatch.setattr(cache, "default_cache_root", lambda: afile / "sub")  # a file stands in the way
    refused(capsys, ["fit", str(world["spec"]), *h5, "-o", str(tmp_path / "o"), "-q"], "--no-cache")


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


def test_suggested_fixes_for_counts_and_labels_work(world, capsys, tmp_path):
    """'give the raw-count layer with --counts-layer' and 'drop --labels and give --n-domains K' work."""
    import json as _json

    a = world["adata"].copy()
    a.layers["counts"] = a.X.copy()
    a.X = a.X.astype(np.float32) * 0.37  # normalised X, raw counts in a layer
    a.obs["one"] = "L1"
    p = tmp_path / "norm.h5ad"
    a.write_h5ad(p)
    spec = str(world["spec"])
    out = tmp_path / "o"
    assert main(["fit", spec, "--data", str(p), "-o", str(out), "-k", "3", *FAST]) == 0
    warned = _json.loads((out / "metrics.json").read_text())["warnings"]
    assert any("--counts-layer" in w for w in warned)
    assert main(["fit", spec, "--data", str(p), "--counts-layer", "counts", "-o", str(out), "--overwrite", "-k", "3",
                 *FAST]) == 0
    assert not _json.loads((out / "metrics.json").read_text()).get("warnings")
    msg = refused(capsys, ["fit", spec, "--data", str(p), "--counts-layer", "counts", "--labels", "one",
                           "-o", str(tmp_path / "o2"), *FAST], "--n-domains")
    assert "drop --labels" in msg
    assert main(["fit", spec, "--data", str(p), "--counts-layer", "counts", "-k", "3", "-o", str(tmp_path / "o2"),
                 *FAST]) == 0


def test_embed_advice_works(world, capsys, tmp_path):
    """A counts table given to embed: '--coords' is advised and embed takes it; a pipeline with an image
    encoder on a section without image: '--image … --scale …' is advised and works."""
    counts, coords, he = _write_table(tmp_path / "t", world["adata"])
    out = tmp_path / "e.h5ad"
    emb = ["embed", str(world["run"]), "--data", str(counts), "-o", str(out), "-q"]
    refused(capsys, emb, "--coords")
    refused(capsys, [*emb, "--coords", str(coords)], "--image")
    assert main([*emb, "--coords", str(coords), "--image", str(he), "--scale", "0.1"]) == 0
    assert out.is_file() and not _partials(tmp_path)


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
