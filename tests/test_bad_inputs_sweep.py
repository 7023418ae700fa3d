"""A sweep of bad values a demanding user types, beyond ``test_bad_inputs.py`` / ``test_bad_data.py``: each ends in
exit code 2, one ``stmm: error: …`` line naming what fixes it, no traceback, nothing written
(:func:`bad_input_kit.refused`). No case starts real work (every refusal comes before reading data or training), and
no case reaches the network (Hub references are refused as malformed, offline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bad_input_kit import FAST, _env, refused, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore")


def _h5ad(world, tmp_path: Path, name: str, change) -> list[str]:
    a = world["adata"].copy()
    change(a)
    p = tmp_path / f"{name}.h5ad"
    a.write_h5ad(p)
    return ["--data", str(p)]


def _other_genes(a) -> None:
    a.var_names = [f"other{i}" for i in range(a.n_vars)]


FIT_CASES = [  # (extra arguments after 'fit SPEC --data GOOD -o OUT -q --no-cache', needle)
    (["--consensus", "2", "-k", "3", "--set", "domains.consensus_mode=bogus"], "consensus_mode"),
    (["--set", "domains.consensus_mode=bogus"], "'vote', 'embedding' or 'coassoc'"),
    (["--consensus", "0"], "--consensus"),
    (["--consensus", "-1"], "--consensus"),
    (["--consensus", "2"], "--n-domains"),  # consensus votes domains: it needs K
    (["--set", "trainepochs"], "--set"),
    (["--set", "train.epochs=abc"], "train.epochs"),
    (["--set", "train.nope=3"], "train.nope"),
    (["--set", "nosuch.x=3"], "no 'nosuch' component"),
    (["--labels", "nope"], "--labels"),
]


@pytest.mark.parametrize("extra,needle", FIT_CASES, ids=[" ".join(c[0]) for c in FIT_CASES])
def test_fit_values(world, capsys, tmp_path, extra, needle):
    refused(capsys, ["fit", str(world["spec"]), *world["good"]["h5ad"], "-o", str(tmp_path / "o"), *FAST, *extra],
            needle)


def test_bad_data_paths_and_sections(world, capsys, tmp_path):
    fit = ["fit", str(world["spec"])]
    out = ["-o", str(tmp_path / "o"), *FAST]
    folder = tmp_path / "folder"
    folder.mkdir()
    refused(capsys, [*fit, "--data", str(folder), *out], "Space Ranger")
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    refused(capsys, [*fit, "--data", str(empty), *out], "not an HDF5/.h5ad file")
    refused(capsys, [*fit, *world["good"]["h5ad"], *_h5ad(world, tmp_path, "other", _other_genes), *out, "-k", "3"],
            "share no gene")

    def nan(a):
        x = np.asarray(a.X.todense(), dtype=float)
        x[0, 0] = np.nan
        a.X = x

    refused(capsys, [*fit, *_h5ad(world, tmp_path, "nan", nan), *out], "--counts-layer")


def test_run_recipe_and_family_problems(world, capsys, tmp_path):
    h5, out = world["good"]["h5ad"], ["-o", str(tmp_path / "o"), *FAST]
    msg = refused(capsys, ["run", "stereom", *h5, *out], "unknown recipe")
    assert "did you mean 'stereomm'" in msg
    refused(capsys, ["run", "train-mean", *h5, *out, "--consensus", "3"], "--consensus")
    refused(capsys, ["predict", str(world["run"]), *h5, "-o", str(tmp_path / "p.h5ad")], "'expression' capability")
    refused(capsys, ["evaluate", str(world["run"]), *h5, "-o", str(tmp_path / "e.json")], "'scoring' capability")


def test_benchmark_refuses_an_unknown_pipeline_before_any_run(capsys, tmp_path):
    """A typo in -p used to run every other pipeline, write a results folder, and only then fail its row."""
    out = tmp_path / "bench"
    for item in ("stereom", "stereomm,stereom", "stereom+consensus3"):
        msg = refused(capsys, ["benchmark", "domains", "-p", item, "-d", "dlpfc-151676", "-o", str(out)],
                      "--pipelines")
        assert "did you mean 'stereomm'" in msg
    refused(capsys, ["benchmark", "domains", "-p", "zzzz", "-d", "dlpfc-151676", "-o", str(out)], "stmm list")
    assert not out.exists()


def test_benchmark_other_values(capsys, tmp_path):
    out = ["-o", str(tmp_path / "bench")]
    refused(capsys, ["benchmark", "domain", *out], "did you mean 'domains'")
    refused(capsys, ["benchmark", "domains", "-p", "stereomm", "-d", "nosuchdata", *out], "nosuchdata")
    refused(capsys, ["benchmark", "domains", "--seeds", "-1", *out], "--seeds")
    refused(capsys, ["benchmark", "domains", "-f", "xml", *out], "--format")
    assert not (tmp_path / "bench").exists()


def test_compose_info_list(capsys, tmp_path):
    spec = ["-o", str(tmp_path / "s.json")]
    refused(capsys, ["compose", "--recipe", "stereomm", "--encoder", "gmm", *spec], "is a task, not an image_encoder")
    refused(capsys, ["compose", "--recipe", "stereomm", "--task", "vgae", *spec], "stmm list --kind task")
    refused(capsys, ["compose", "--recipe", "stereomm", "--set", "domains.consensus=0", *spec], "domains.consensus")
    msg = refused(capsys, ["info", "stereom"], "stmm list")
    assert "did you mean 'stereomm'" in msg
    refused(capsys, ["list", "--kind", "bogus"], "kinds are")
    assert not (tmp_path / "s.json").exists()


HUB_REFS = ["hf:", "hf:org", "hf:org/na me", "hf:/x", "org/name@", "hf:org/name@ "]


@pytest.mark.parametrize("ref", HUB_REFS)
def test_malformed_hub_references_fail_fast(world, capsys, tmp_path, monkeypatch, ref):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never contacted: refused before any request
    refused(capsys, ["pull", ref, "-o", str(tmp_path / "p")], "not a Hub repository name")
    refused(capsys, ["push", str(world["run"]), ref.removeprefix("hf:")], "not a Hub repository name")


def test_push_verifies_the_folder_before_the_network_settings(world, capsys, tmp_path, monkeypatch):
    """A corrupt run folder is reported as such, offline or without a token (not 'unset HF_HUB_OFFLINE' first)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world["run"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for offline in ("1", None):
        if offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        else:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        refused(capsys, ["push", str(broken), "org/name"], "model.safetensors is corrupted")


def test_magic_gene_count_error_names_the_setting():
    """Too few shared genes: the message names the exact --set key (it printed a literal '...')."""
    import numpy as np
    import scipy.sparse as sp

    from stmm_core.errors import DataError
    from stmm_magic.genes import select_genes

    class _S:
        def __init__(self):
            self.name, self.n_genes = "s", 5
            self.gene_names = [f"g{i}" for i in range(5)]
            self.counts = sp.csr_matrix(np.arange(50, dtype=float).reshape(10, 5) + 1)

    with pytest.raises(DataError, match=r"--set decoder\.n_targets=5"):
        select_genes([_S()], 40, "hvg", None, 1e4, "target genes", setting="decoder.n_targets")
