"""``stmm compose`` → ``stmm fit`` end to end on a small synthetic section, and every bad input ending in
one clear message with nothing half-written."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

from conftest import run_stmm

FAST = ["--set", "train.epochs=60", "--set", "image.weights=random", "--set", "image.model=resnet18",
        "--set", "graph.hidden=[64]", "--set", "gene.n_top_genes=100", "-q"]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    r = run_stmm(["compose", "--recipe", "stereomm", "-o", str(path)])
    assert r.returncode == 0, r.stderr
    return path


def test_compose_dry_run_prints_valid_spec(tmp_path):
    r = run_stmm(["compose", "--encoder", "vit", "--fuse", "attention", "--graph", "vgae", "--dry-run",
                  "-o", str(tmp_path / "x.json")])
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    assert spec["components"]["image"]["name"] == "vit"
    assert not (tmp_path / "x.json").exists()


def test_fit_end_to_end(spec_file, synthetic_h5ad, tmp_path):
    out = tmp_path / "run"
    r = run_stmm(["fit", str(spec_file), "--data", str(synthetic_h5ad), "-o", str(out), "--labels", "domain",
                  "--seed", "3", *FAST])
    assert r.returncode == 0, r.stderr
    for f in ("result.h5ad", "spec.json", "model.safetensors", "metrics.json", "domains.png", "loss.png"):
        assert (out / f).is_file(), f
    res = ad.read_h5ad(out / "result.h5ad")
    assert res.obsm["X_stmm"].dtype == np.float32
    assert res.obs["stmm_domain"].nunique() == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_domains"] == 4 and metrics["seed"] == 3
    assert metrics["clustering"]["ari"] > 0.5, metrics["clustering"]  # synthetic domains are easy
    assert "ARI" in r.stdout
    # a second fit reuses the cached image features and gives the same embedding (CPU determinism)
    out2 = tmp_path / "run2"
    r2 = run_stmm(["fit", str(spec_file), "--data", str(synthetic_h5ad), "-o", str(out2), "--labels", "domain",
                   "--seed", "3", *FAST])
    assert r2.returncode == 0, r2.stderr
    assert "from cache" in r2.stdout
    np.testing.assert_array_equal(ad.read_h5ad(out2 / "result.h5ad").obsm["X_stmm"], res.obsm["X_stmm"])


def _bad(tmp_path, name, mutate):
    a = ad.read_h5ad(tmp_path.parent / "synthetic.h5ad") if False else None  # noqa: F841
    from stmm_core.testing.synthetic import make_synthetic_adata

    adata = make_synthetic_adata(n_spots=100, n_genes=60, n_domains=3, seed=2)
    adata = mutate(adata) or adata
    path = tmp_path / f"{name}.h5ad"
    adata.write_h5ad(path)
    return path


def _nan_counts(a):
    X = a.X.toarray()
    X[0, 0] = np.nan
    a.X = X


def _neg_counts(a):
    X = a.X.toarray()
    X[1, 1] = -3
    a.X = X


def _outside(a):
    a.obsm["spatial"] = a.obsm["spatial"] * 20


def _dup_ids(a):
    names = list(a.obs_names)
    names[1] = names[0]
    a.obs_names = names


def _no_spatial(a):
    del a.obsm["spatial"]


def _no_scale(a):
    del a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]


def _zero_counts(a):
    a.X = a.X * 0


BAD = [
    ("nan", _nan_counts, "NaN"),
    ("negative", _neg_counts, "negative"),
    ("outside", _outside, "outside"),
    ("dupids", _dup_ids, "duplicate"),
    ("nospatial", _no_spatial, "spatial"),
    ("noscale", _no_scale, "scale"),
    ("zero", _zero_counts, "zero"),
]


@pytest.mark.parametrize("name,mutate,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_clear_message(spec_file, tmp_path, name, mutate, needle):
    path = _bad(tmp_path, name, mutate)
    out = tmp_path / "out"
    r = run_stmm(["fit", str(spec_file), "--data", str(path), "-o", str(out), "-k", "3", *FAST])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("stmm: error:"), r.stderr
    assert needle.lower() in err[0].lower(), err[0]
    assert not (out / "metrics.json").exists() and not (out / "result.h5ad").exists()


def test_other_user_errors(spec_file, synthetic_h5ad, tmp_path):
    cases = [
        (["fit", str(spec_file), "--data", str(tmp_path / "missing.h5ad"), "-o", str(tmp_path / "o")], "not found"),
        (["fit", str(spec_file), "--data", str(spec_file), "-o", str(tmp_path / "o")], ""),
        (["fit", str(spec_file), "--data", str(synthetic_h5ad), "-o", str(tmp_path / "o"), "-k", "100000", *FAST],
         "spots"),
        (["fit", str(spec_file), "--data", str(synthetic_h5ad), "-o", str(tmp_path / "o"), "--labels", "nope"],
         "no such column"),
        (["compose", "--graph", "vgea"], "did you mean 'vgae'"),
        (["compose", "--recipe", "stereomm", "--set", "fusion.nope=1"], "nope"),
        (["run", "stereom", "--data", str(synthetic_h5ad), "-o", str(tmp_path / "o")], "did you mean 'stereomm'"),
    ]
    notad = tmp_path / "not_anndata.h5ad"
    notad.write_text("hello")
    cases.append((["fit", str(spec_file), "--data", str(notad), "-o", str(tmp_path / "o")], "AnnData"))
    # a file where a parent folder of -o would go: refused before the data is read
    cases.append((["fit", str(spec_file), "--data", str(synthetic_h5ad), "-o", str(notad / "run")], "is a file"))
    for args, needle in cases:
        r = run_stmm(args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("stmm: error:"), (args, r.stderr)
        assert needle.lower() in r.stderr.lower(), (args, r.stderr)


def test_command_line_usage_errors_are_short_messages(spec_file, tmp_path):
    """Parsing errors (typer's vendored click raises them) end in a usage message and exit code 2, no traceback."""
    out = str(tmp_path / "o")
    cases = [
        (["fit", str(spec_file), "--data", "x.h5ad", "-o", out, "-k", "0"], "--n-domains"),
        (["fit", str(spec_file), "--data", "x.h5ad", "-o", out, "--seed", "abc"], "--seed"),
        (["run", "stereomm", "--data", "x.h5ad", "-o", out, "--no-such-option"], "no such option"),
        (["run", "stereomm", "-o", out], "missing option '--data'"),
        (["no-such-command"], "no such command"),
    ]
    for args, needle in cases:
        r = run_stmm(args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and needle.lower() in r.stderr.lower(), (args, r.stderr)
    assert not (tmp_path / "o").exists()


def test_counts_table_with_coords_and_counts_layer_from_the_command_line(tmp_path):
    """The issue's third input form from the CLI: a counts table + --coords; and --counts-layer for an .h5ad
    whose X is normalised. Missing --coords for a table is one clear message naming the option."""
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.testing.synthetic import make_synthetic_adata

    a = make_synthetic_adata(n_spots=120, n_genes=40, n_domains=3, seed=4)
    counts = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    pd.DataFrame(counts, index=a.obs_names, columns=a.var_names).to_csv(tmp_path / "counts.csv")
    xy = np.asarray(a.obsm["spatial"])
    pd.DataFrame({"id": a.obs_names, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(tmp_path / "coords.csv", index=False)
    fast = ["--set", "train.epochs=5", "-q", "-k", "3"]
    r = run_stmm(["run", "stereomm-expression", "--data", str(tmp_path / "counts.csv"), "--coords",
                  str(tmp_path / "coords.csv"), "-o", str(tmp_path / "t"), *fast])
    assert r.returncode == 0, r.stderr
    assert ad.read_h5ad(tmp_path / "t" / "result.h5ad").n_obs == 120
    r = run_stmm(["run", "stereomm-expression", "--data", str(tmp_path / "counts.csv"), "-o", str(tmp_path / "u"),
                  *fast])
    assert r.returncode == 2 and "--coords" in r.stderr and "Traceback" not in r.stderr, r.stderr

    norm = a.copy()
    norm.layers["counts"] = sp.csr_matrix(counts)
    norm.X = sp.csr_matrix(np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4))
    norm.write_h5ad(tmp_path / "norm.h5ad")
    r = run_stmm(["run", "stereomm-expression", "--data", str(tmp_path / "norm.h5ad"), "-o", str(tmp_path / "v"),
                  *fast])
    # normalised X with the counts in a layer: refused, naming the flag and the layer (nothing written)
    assert r.returncode == 2 and "--counts-layer counts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "v").exists()
    r = run_stmm(["run", "stereomm-expression", "--data", str(tmp_path / "norm.h5ad"), "--counts-layer", "counts",
                  "-o", str(tmp_path / "w"), *fast])
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
