"""Second sweep of bad input (after ``test_bad_inputs_sweep.py``): each case ends in exit code 2 and one
``stmm: error: …`` line naming the flag (or the command) that fixes it, with no traceback and nothing written
(:func:`bad_input_kit.refused`). Every case here failed that rule before its fix. No case reaches the network.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bad_input_kit import FAST, _env, refused, world  # noqa: F401 (fixtures)
from stmm_core.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")


def _h5ad(world, tmp_path: Path, name: str, change) -> str:
    a = world["adata"].copy()
    change(a)
    p = tmp_path / f"{name}.h5ad"
    a.write_h5ad(p)
    return str(p)


# ------------------------------------------------------------------------------------ --set names the flag
SET_CASES = [  # (command words before the --set, the --set value, what the message starts with)
    ("fit", "domains.consensus_mode=bogus", "--set domains.consensus_mode: Input should be 'vote'"),
    ("run", "train.epochs=0", "--set train.epochs: Input should be greater than or equal to 1"),
    ("compose", "fusion.dim=abc", "--set fusion.dim=abc: invalid parameters for fusion 'attention'"),
    ("compose", "image.name=nosuch", "--set image.name=nosuch: unknown image_encoder 'nosuch'"),
    ("compose", "nosuch.x=3", "--set 'nosuch.x': this spec has no 'nosuch' component"),
]


@pytest.mark.parametrize("cmd,item,start", SET_CASES, ids=[f"{c[0]} {c[1]}" for c in SET_CASES])
def test_set_errors_name_the_set_flag(world, capsys, tmp_path, cmd, item, start):
    """Before: 'invalid pipeline spec: KEY: …' (or the component's message) without the word --set."""
    if cmd == "compose":
        args = ["compose", "--recipe", "stereomm", "-o", str(tmp_path / "s.json")]
    else:
        head = ["fit", str(world["spec"])] if cmd == "fit" else ["run", "stereomm-expression"]
        args = [*head, *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *FAST]
    msg = refused(capsys, [*args, "--set", "train.seed=3", "--set", item], "--set")
    assert msg.removeprefix("stmm: error: ").startswith(start), msg
    assert not (tmp_path / "s.json").exists()


def test_a_bad_spec_file_is_not_blamed_on_set(world, capsys, tmp_path):
    spec = json.loads(world["spec"].read_text())
    spec["domains"]["consensus_mode"] = "bogus"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    msg = refused(capsys, ["fit", str(bad), *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *FAST,
                           "--set", "train.seed=3"], "consensus_mode")
    assert "--set" not in msg


# ------------------------------------------------------------------------ damaged run folders: what to do
def test_damaged_run_folder_says_how_to_restore_it(world, capsys, tmp_path):
    """Before: 'delete it … and pull again' even for a folder fitted here (nothing to pull)."""
    local, pulled = tmp_path / "local", tmp_path / "pulled"
    for folder in (local, pulled):
        shutil.copytree(world["run"], folder)
        with open(folder / "metrics.json", "a") as fh:
            fh.write(" ")
    commit = "a" * 40
    (pulled / "pulled.json").write_text(json.dumps({"repo": "org/name", "commit": commit, "revision": "main"}))
    out = ["-o", str(tmp_path / "e.h5ad")]
    msg = refused(capsys, ["embed", str(local), *world["good"]["h5ad"], *out], "metrics.json is corrupted")
    assert "fitted here" in msg and f"-o {local} --overwrite" in msg and "stmm pull" not in msg
    msg = refused(capsys, ["embed", str(pulled), *world["good"]["h5ad"], *out], "metrics.json is corrupted")
    assert f"stmm pull org/name@{commit} -o {pulled} --overwrite" in msg
    (local / "loss.png").unlink()
    refused(capsys, ["embed", str(local), *world["good"]["h5ad"], *out], "listed in manifest.json but missing; "
            "it was fitted here")


def test_restore_hint_for_a_hub_download(tmp_path):
    from stmm_core.hub.manifest import restore_hint

    assert "pull org/name@abc again" in restore_hint(tmp_path, "org/name@abc")
    assert "HF_HUB_CACHE" in restore_hint(tmp_path, "org/name@abc")


# --------------------------------------------------------------------------- duplicate spot ids: a flag
def _dup_ids(a) -> None:
    names = list(a.obs_names)
    names[1] = names[5] = names[0]
    a.obs_names = names


def test_duplicate_spot_ids_name_the_unique_ids_flag(world, capsys, tmp_path, monkeypatch):
    """Before: 'spot ids must be unique (e.g. prefix them with the sample)': no flag could fix it."""
    monkeypatch.delenv("STMM_UNIQUE_IDS", raising=False)
    dup = _h5ad(world, tmp_path, "dup", _dup_ids)
    out = ["-o", str(tmp_path / "o"), *FAST]
    refused(capsys, ["fit", str(world["spec"]), "--data", dup, *out], "pass --unique-ids")
    # ids joined to a positions table by id cannot be told apart: refused even with the flag, and it says why
    coords = world["good"]["table"][3]
    refused(capsys, ["fit", str(world["spec"]), "--data", dup, "--coords", coords, *out, "--unique-ids"],
            "joined to their positions by id")
    assert "STMM_UNIQUE_IDS" not in os.environ  # the flag holds for one command only

    emb = tmp_path / "e.h5ad"
    assert main(["embed", str(world["run"]), "--data", dup, "-o", str(emb), "--unique-ids", "-q"]) == 0
    import anndata

    names = list(anndata.read_h5ad(emb).obs_names)
    assert len(set(names)) == len(names) == world["adata"].n_obs
    assert names[:2] == [names[0], f"{names[0]}-1"] and names[5] == f"{names[0]}-2"
    assert "STMM_UNIQUE_IDS" not in os.environ
    refused(capsys, ["embed", str(world["run"]), "--data", dup, "-o", str(tmp_path / "e2.h5ad")], "--unique-ids")


def test_duplicate_gene_names_name_the_unique_ids_flag(world, capsys, tmp_path, monkeypatch):
    """Before: 'gene names must be unique … (var_names_make_unique)': a data-side fix, no flag."""
    monkeypatch.delenv("STMM_UNIQUE_IDS", raising=False)

    def dup_genes(a) -> None:
        names = list(a.var_names)
        names[1] = names[4] = names[0]
        a.var_names = names

    dup = _h5ad(world, tmp_path, "dupg", dup_genes)
    refused(capsys, ["fit", str(world["spec"]), "--data", dup, "-o", str(tmp_path / "o"), *FAST],
            "pass --unique-ids")
    assert not (tmp_path / "o").exists()
    out = tmp_path / "ok"
    assert main(["fit", str(world["spec"]), "--data", dup, "-o", str(out), *FAST, "--unique-ids"]) == 0
    import anndata

    genes = list(anndata.read_h5ad(out / "result.h5ad").var_names)
    first = world["adata"].var_names[0]
    assert len(set(genes)) == len(genes)  # kept as separate genes, renamed (not summed)
    assert {first, f"{first}-1", f"{first}-2"} <= set(genes)
    assert "STMM_UNIQUE_IDS" not in os.environ


def test_benchmark_takes_unique_ids_for_repeated_gene_names(tmp_path, capsys, monkeypatch):
    """Before: the failed row said 'pass --unique-ids', which `stmm benchmark` did not accept."""
    import warnings

    from stmm_core.testing.synthetic import make_synthetic_adata

    monkeypatch.delenv("STMM_UNIQUE_IDS", raising=False)
    a = make_synthetic_adata(n_spots=90, n_genes=40, n_domains=3, seed=1)
    names = list(a.var_names)
    names[1] = names[0]
    a.var_names = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(tmp_path / "dup.h5ad")
    args = ["benchmark", "domains", "-p", "expression-gmm", "-d", str(tmp_path / "dup.h5ad"), "--label", "domain",
            "--seeds", "1", "--work", str(tmp_path / "w")]
    assert main([*args, "-o", str(tmp_path / "o1")]) != 0
    assert "pass --unique-ids" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "o2"), "--unique-ids"]) == 0
    assert "STMM_UNIQUE_IDS" not in os.environ


def test_benchmark_takes_counts_layer_for_normalised_x(tmp_path, capsys, monkeypatch):
    """Before: a file with log-normalised X and counts in layers['counts'] failed its row with 'use
    --counts-layer', which `stmm benchmark` did not accept."""
    import warnings

    import scipy.sparse as sp

    from stmm_core.testing.synthetic import make_synthetic_adata

    monkeypatch.delenv("STMM_COUNTS_LAYER", raising=False)
    a = make_synthetic_adata(n_spots=90, n_genes=40, n_domains=3, seed=1)
    counts = sp.csr_matrix(a.X, dtype=np.float32)
    a.layers["counts"] = counts.copy()
    lib = np.asarray(counts.sum(axis=1)).ravel()
    a.X = sp.csr_matrix(np.log1p(counts.toarray() / lib[:, None] * 1e4), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(tmp_path / "norm.h5ad")
    args = ["benchmark", "domains", "-p", "expression-gmm", "-d", str(tmp_path / "norm.h5ad"), "--label", "domain",
            "--seeds", "1", "--work", str(tmp_path / "w"), "-f", "json"]
    assert main([*args, "-o", str(tmp_path / "o1")]) != 0
    assert "--counts-layer" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "o2"), "--counts-layer", "counts"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["status"] == "ok", row
    assert "STMM_COUNTS_LAYER" not in os.environ
    assert main([*args, "-o", str(tmp_path / "o3"), "--counts-layer", "nope"]) != 0  # a failed row, as any
    assert "--counts-layer 'nope' not found; available: counts" in capsys.readouterr().err


# --------------------------------------------------------------------------------- one section given twice
def test_the_same_section_twice_is_refused(world, capsys, tmp_path):
    """Before: exit 0, one section fitted as two (its spots twice in the joint graph)."""
    h5 = world["good"]["h5ad"]
    out = ["-o", str(tmp_path / "o"), *FAST, "-k", "3"]
    refused(capsys, ["fit", str(world["spec"]), *h5, h5[1], *out], "is given twice")
    rel = os.path.relpath(h5[1])
    msg = refused(capsys, ["fit", str(world["spec"]), *h5, rel, *out], "give each section once")
    assert f"also as {h5[1]}" in msg


# ------------------------------------------------------------------------- benchmark: refused before any run
def test_benchmark_empty_names_are_refused(capsys, tmp_path):
    """Before: '-d ""' (an unset shell variable) meant the suite's default datasets: a real DLPFC run, exit 0."""
    out = ["-o", str(tmp_path / "bench")]
    refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", "", *out], "--datasets '' names nothing")
    refused(capsys, ["benchmark", "domains", "-p", ",", "-d", "dlpfc-151676", *out], "--pipelines ',' names nothing")
    refused(capsys, ["benchmark", "expression", "-p", "train-mean", "--folds", "", *out], "--folds")
    assert not (tmp_path / "bench").exists()


BENCH_SETS = [  # (--set value, needle); before: the first and third ran with the setting applied to nothing
    ("nosuch.x=1", "no pipeline of this benchmark has the setting 'nosuch.x'"),
    ("task.n_initt=3", "no pipeline of this benchmark has the setting 'task.n_initt'"),
    ("stereom:train.epochs=3", "no pipeline of this benchmark is named 'stereom'"),
    ("train.epochs=abc", "--set train.epochs: Input should be a valid integer"),  # before: every row failed
    ("expression-gmm:task.n_init=0", "--set task.n_init=0: invalid parameters for task 'gmm'"),
]


@pytest.mark.parametrize("item,needle", BENCH_SETS, ids=[c[0] for c in BENCH_SETS])
def test_benchmark_set_is_checked_before_any_run(world, capsys, tmp_path, item, needle):
    out = tmp_path / "bench"
    refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", world["good"]["h5ad"][1], "--label",
                     "domain", "--seeds", "1", "--set", item, "-o", str(out)], needle)
    assert not out.exists()


@pytest.mark.parametrize("part", ["a/b", "../x", ""])
def test_benchmark_part_name_is_a_plain_name(world, capsys, tmp_path, part):
    """Before: '--part a/b' ran, then wrote results/domains.part-a/b.json, a shard 'benchmark report' never merges."""
    out = tmp_path / "bench"
    refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", world["good"]["h5ad"][1], "--label",
                     "domain", "--part", part, "-o", str(out)], "--part")
    assert not out.exists()


def test_benchmark_label_column_is_checked_before_any_run(world, capsys, tmp_path):
    """Before: every run failed on the missing column, after a results folder had been written (exit 2)."""
    out = tmp_path / "bench"
    msg = refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", world["good"]["h5ad"][1],
                           "--label", "layer", "-o", str(out)], "--label 'layer'")
    assert "columns: domain, in_tissue" in msg
    assert not out.exists()


def test_benchmark_settings_that_apply_still_pass_the_checks():
    from stmm_core.cli.benchmark_cmd import check_sets

    check_sets("domains", ["stereomm", "stereomm-expression"], ["image.weights=random"])  # stereomm has it
    check_sets("domains", ["expression-gmm"], ["expression-gmm:task.n_init=2", "train.seed=1"])


# ------------------------------------------------------------------------------ flags that did nothing, scale
def test_bin_size_on_a_section_that_is_not_binned(world, capsys, tmp_path):
    """Before: --bin-size on an .h5ad was ignored (exit 0, the spots as they were)."""
    refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *FAST,
                     "--bin-size", "8"], "leave --bin-size out")


def test_an_image_scale_that_puts_every_spot_in_one_pixel(world, capsys, tmp_path):
    """Before: exit 0 with a warning ('a spot spans 0.0 image pixels'); the image told no two spots apart."""
    he = str(Path(world["good"]["table"][1]).parent / "he.png")
    msg = refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *FAST,
                           "-k", "3", "--image", he, "--scale", "1e-4"], "pass --scale 0.1")
    assert "within 0.07 px" in msg


def test_a_folder_that_is_no_pipeline_at_all(capsys, tmp_path):
    """Before: the advice was to fit FOLDER/spec.json again, a file that did not exist."""
    (tmp_path / "notes.txt").write_text("x")
    msg = refused(capsys, ["push", str(tmp_path), "org/name"], "not a saved stmm pipeline")
    assert "spec.json --data" not in msg


# ----------------------------------------------------------------------- outputs that belong to a saved run
def test_a_file_output_never_replaces_a_file_of_a_saved_run(world, capsys, tmp_path):
    """Before: 'compose -o RUN/spec.json' and 'embed -o RUN/result.h5ad' replaced the run's own files (exit 0); the
    run then failed its checksums or lost its result."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    refused(capsys, ["compose", "--recipe", "stereomm-expression", "-o", str(run / "spec.json")],
            "is a file of the saved pipeline", untouched=[run, run / "spec.json"])
    refused(capsys, ["embed", str(run), *world["good"]["h5ad"], "-o", str(run / "result.h5ad")],
            "give another file name", untouched=[run, run / "result.h5ad"])
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert main(["embed", str(run), *world["good"]["h5ad"], "-o", str(run / "embedding.h5ad"), "-q"]) == 0


def test_run_and_predict_given_the_wrong_kind_of_path(world, capsys, tmp_path):
    """Before: 'unknown recipe /path/run. Available: …' and '… is not a trained pipeline (no spec.json)' for a file."""
    out = ["-o", str(tmp_path / "o"), *FAST]
    refused(capsys, ["run", str(world["run"]), *world["good"]["h5ad"], *out], f"stmm fit {world['run']}")
    refused(capsys, ["predict", str(world["spec"]), *world["good"]["h5ad"], "-o", str(tmp_path / "p.h5ad")],
            "is a file, not a run folder")


# ------------------------------------------------------------------------------------------ label columns
def test_label_column_that_holds_ids(world, capsys, tmp_path):
    """Before: exit 0 with K = 64 domains for 64 spots (an id column taken for domains)."""
    def ids(a):
        a.obs["barcode"] = [str(i) for i in range(a.n_obs)]

    data = _h5ad(world, tmp_path, "ids", ids)
    refused(capsys, ["fit", str(world["spec"]), "--data", data, "-o", str(tmp_path / "o"), *FAST, "--labels",
                     "barcode"], "looks like an id column")


def test_label_column_missing_from_one_of_several_sections(world, capsys, tmp_path):
    """Before: refused only after the joint fit, as 'the ground-truth labels has no labelled spots' (no flag)."""
    def unlabelled(a):
        a.obs["domain"] = np.nan

    data = _h5ad(world, tmp_path, "unlabelled", unlabelled)
    msg = refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], data, "-o", str(tmp_path / "o"), *FAST,
                           "--labels", "domain"], "--labels 'domain' in section 'synthetic_2'")
    assert "has no labelled spots" in msg


def test_embed_says_when_spots_without_counts_are_left_out(world, capsys, tmp_path):
    """Before: the .h5ad had 59 of 64 spots and nothing said so."""
    import scipy.sparse as sp

    def empty_spots(a):
        x = np.asarray(a.X.todense(), dtype=float)
        x[:5] = 0
        a.X = sp.csr_matrix(x)

    data = _h5ad(world, tmp_path, "empty_spots", empty_spots)
    capsys.readouterr()
    assert main(["embed", str(world["run"]), "--data", data, "-o", str(tmp_path / "e.h5ad"), "-q"]) == 0
    assert "5 spots without counts left out (not in e.h5ad)" in capsys.readouterr().out


def test_an_output_that_is_an_input_is_refused(world, capsys, tmp_path):
    """Before: 'embed/predict --data X.h5ad -o X.h5ad' replaced the user's input file (exit 0)."""
    data = tmp_path / "in.h5ad"
    shutil.copy(world["good"]["h5ad"][1], data)
    before = data.read_bytes()
    for cmd in ("embed", "predict", "evaluate"):
        refused(capsys, [cmd, str(world["run"]), "--data", str(data), "-o", str(data)], "is the --data input",
                untouched=[data])
    he = tmp_path / "he.png"  # predict writes a .png beside its .h5ad
    shutil.copy(Path(world["good"]["table"][1]).parent / "he.png", he)
    refused(capsys, ["predict", str(world["run"]), "--image", str(he), "-o", str(tmp_path / "he.h5ad")],
            "it also writes he.png, which is the --image input")
    assert data.read_bytes() == before


def test_benchmark_output_that_is_a_run_folder(world, capsys, tmp_path):
    """Before: benchmark results, plots and RESULTS.md were written into the run folder (exit 0)."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", world["good"]["h5ad"][1], "--label",
                     "domain", "-o", str(run)], "is a run folder", untouched=[run])


@pytest.fixture
def locked(tmp_path):
    """``lock(folder)``: make *folder* immutable (``chattr +i``: not writable even for root), undone afterwards."""
    import subprocess

    done: list[Path] = []

    def lock(folder: Path) -> Path:
        r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("needs chattr +i (ext4 and root, or CAP_LINUX_IMMUTABLE)")
        done.append(folder)
        return folder

    yield lock
    for folder in done:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_an_output_folder_that_cannot_be_written_fails_before_the_work(world, capsys, tmp_path, locked):
    """Before: the fit (or every benchmark run) ran, then 'Operation not permitted: DIR (file system error …)'."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    empty = tmp_path / "empty"
    empty.mkdir()
    locked(run), locked(empty)
    fit = ["fit", str(world["spec"]), *world["good"]["h5ad"], *FAST, "-k", "3"]
    refused(capsys, [*fit, "-o", str(run), "--overwrite"], f"cannot write in {run}", untouched=[run])
    refused(capsys, [*fit, "-o", str(empty)], f"cannot write in {empty}", untouched=[empty])
    refused(capsys, ["benchmark", "domains", "-p", "expression-gmm", "-d", world["good"]["h5ad"][1], "--label",
                     "domain", "-o", str(empty)], "cannot write in", untouched=[empty])


def test_evaluate_names_allow_missing_genes(world, capsys, tmp_path):
    """Before: 'section … lacks 5 of the 12 target genes …' without the flag that scores the targets it has."""
    from magic_tiny import TINY_MODEL

    def other_library(a):
        a.uns["spatial"] = {"other": a.uns["spatial"]["synthetic"]}

    second = _h5ad(world, tmp_path, "second", other_library)
    run = tmp_path / "magic"
    assert main(["run", "magic", *world["good"]["h5ad"], second, "-o", str(run), *FAST, *TINY_MODEL,
                 "--set", "train.stage1.epochs=1", "--set", "train.stage2.epochs=1"]) == 0
    held = tmp_path / "held.h5ad"
    world["adata"][4:, 10:].copy().write_h5ad(held)  # other spots, a quarter of the genes gone
    refused(capsys, ["evaluate", str(run), "--data", str(held), "-o", str(tmp_path / "m.json")],
            "pass --allow-missing-genes")
    assert main(["evaluate", str(run), "--data", str(held), "--allow-missing-genes", "-o",
                 str(tmp_path / "m.json")]) == 0


BENCH_IGNORED = [  # options a suite ignored (exit 0, a real run on the defaults or without the option)
    (["domains", "-p", "expression-gmm", "-d", "dlpfc-151676", "--label", "nope"], "leave --label out"),
    (["domains", "-p", "expression-gmm", "--folds", "x"], "leave --folds out"),
    (["expression", "-p", "train-mean", "--label", "domain"], "--label applies to the domains suite"),
]


@pytest.mark.parametrize("args,needle", BENCH_IGNORED, ids=[" ".join(c[0][2:]) for c in BENCH_IGNORED])
def test_benchmark_options_the_suite_would_ignore(capsys, tmp_path, args, needle):
    out = tmp_path / "bench"
    refused(capsys, ["benchmark", *args, "-o", str(out)], needle)
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(capsys, ["benchmark", "expression", "-p", "train-mean", "--work", str(afile), "-o", str(out)],
            "--work", untouched=[afile])
    assert not out.exists()


# -------------------------------------------------------------------- a damaged Space Ranger spatial/ folder
def test_damaged_space_ranger_files_name_the_flag_that_works(world, capsys, tmp_path):
    """Before: 'cannot read …/scalefactors_json.json: …' with no way round it (even --scale did not help), and an
    unreadable positions file named no flag."""
    sr = Path(world["good"]["spaceranger"][1])
    bad_sf = tmp_path / "bad_sf"
    shutil.copytree(sr, bad_sf)
    (bad_sf / "spatial" / "scalefactors_json.json").write_text("{bad")
    fit = ["fit", str(world["spec"]), *FAST, "-k", "3"]
    refused(capsys, [*fit, "--data", str(bad_sf), "-o", str(tmp_path / "o")], "or pass --scale S")
    assert main([*fit, "--data", str(bad_sf), "--scale", "0.1", "-o", str(tmp_path / "o")]) == 0
    assert "its scale factors are left out" in capsys.readouterr().err

    bad_pos = tmp_path / "bad_pos"
    shutil.copytree(sr, bad_pos)
    (bad_pos / "spatial" / "tissue_positions_list.csv").write_text("garbage\n1,2\n")
    refused(capsys, [*fit, "--data", str(bad_pos), "-o", str(tmp_path / "o2")], "--coords")  # one line


def test_sections_sharing_few_genes_are_warned_about(world, capsys, tmp_path):
    """Before: exit 0 with only 'gene.pca=10 is more than the 5 genes' (the overlap itself was never said)."""
    few = tmp_path / "few.h5ad"
    world["adata"][:, :5].copy().write_h5ad(few)
    capsys.readouterr()
    assert main(["fit", str(world["spec"]), *world["good"]["h5ad"], str(few), "-o", str(tmp_path / "o"), *FAST,
                 "-k", "3"]) == 0
    assert "the --data sections share only 5 gene names" in capsys.readouterr().err


def test_a_file_output_never_replaces_a_file_stmm_did_not_write(world, capsys, tmp_path):
    """Before: 'embed -o other_section.h5ad' or 'compose -o he.png' replaced the user's file (exit 0)."""
    data = tmp_path / "other_section.h5ad"
    shutil.copy(world["good"]["h5ad"][1], data)
    image = tmp_path / "he.png"
    shutil.copy(Path(world["good"]["table"][1]).parent / "he.png", image)
    refused(capsys, ["embed", str(world["run"]), *world["good"]["h5ad"], "-o", str(data)], "not a file stmm wrote",
            untouched=[data])
    refused(capsys, ["compose", "--recipe", "stereomm-expression", "-o", str(image)], "give a new file name",
            untouched=[image])
    # its own earlier outputs are still replaced, as before
    out, spec = tmp_path / "e.h5ad", tmp_path / "s.json"
    for _ in range(2):
        assert main(["embed", str(world["run"]), *world["good"]["h5ad"], "-o", str(out), "-q"]) == 0
        assert main(["compose", "--recipe", "stereomm-expression", "-o", str(spec)]) == 0


def test_magic_stage2_without_stage1_says_to_train_stage1(world, capsys, tmp_path):
    """Before: 'run folder not found: NEW' — nothing said that --stage 2 continues a stage-1 folder."""
    from magic_tiny import TINY_MODEL

    new = tmp_path / "new"
    msg = refused(capsys, ["run", "magic", *world["good"]["h5ad"], "-o", str(new), "--stage", "2", *FAST,
                           *TINY_MODEL], "--stage 1")
    assert "leave out --stage" in msg
    assert not new.exists() or not any(new.iterdir())  # nothing half-written
