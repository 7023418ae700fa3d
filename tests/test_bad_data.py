"""Bad data, parametrised over readers (h5ad, counts table + coordinates, Space Ranger folder), and result sanity:
refusals as in ``test_bad_inputs.py`` (one line, the flag that fixes it, nothing written); where a message
suggests a fix, the fix is run and must work; results that are still meaningful carry their warnings in
metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bad_input_kit import (FAST, READERS, _env, _section, _write_spaceranger, _write_table, world,  # noqa: F401 (fixtures)
                           partials as _partials, refused)
from stmm_core.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore")


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


def test_normalised_x_beside_a_counts_layer_is_refused_and_the_advice_works(world, capsys, tmp_path):
    """X log-normalised while layers['counts'] holds the counts: refused naming --counts-layer counts (a silent
    run on X scored ARI 0.45 against 0.75 on the counts); the advised flag works, and --counts-layer X keeps X."""
    import scipy.sparse as sp

    a = world["adata"].copy()
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(np.asarray(a.X.todense() if sp.issparse(a.X) else a.X, dtype=np.float32)))
    data = _section("h5ad", tmp_path, a, "lognorm")
    msg = refused(capsys, ["fit", str(world["spec"]), *data, "-o", str(tmp_path / "o"), "-k", "3", *FAST],
                  "--counts-layer counts")
    assert "--counts-layer X" in msg
    for layer, warned in (("counts", False), ("X", True)):  # X kept on request: the result carries the warning
        out = tmp_path / f"o-{layer}"
        assert main(["fit", str(world["spec"]), *data, "--counts-layer", layer, "-o", str(out), "-k", "3", *FAST]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert any("non-integer" in w for w in metrics.get("warnings", [])) is warned


def test_domains_found_differ_from_k_is_said(world, capsys, tmp_path):
    from stmm_graph_fusion.run import summary_lines

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
    refused(capsys, ["fit", spec, "--data", str(p), "-o", str(out), "-k", "3", *FAST], "--counts-layer counts")
    assert main(["fit", spec, "--data", str(p), "--counts-layer", "counts", "-o", str(out), "-k", "3", *FAST]) == 0
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
