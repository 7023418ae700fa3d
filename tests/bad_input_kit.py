"""Shared pieces of the bad-input suites (``test_bad_inputs.py``, ``test_bad_data.py``): tiny synthetic sections
in every reader's format, a tiny spec, and :func:`refused`, the one assertion every bad-input case makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stmm_core.cli.main import main

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


def build_world(root: Path) -> dict:
    """Sections in every reader's format, a tiny spec with a weight-free image encoder, one finished run."""
    from stmm_core.cli.compose_cmd import compose_spec

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STMM_PROGRESS", "0")
        mp.setenv("STMM_CACHE_DIR", str(root / "cache"))
        spec = compose_spec("stereomm", {"image": "stain-stats"},
                            {"train.epochs": 2, "gene.n_top_genes": 30, "gene.pca": 10, "task.n_init": 1,
                             "fusion.img_weight": 1.0})  # the image is used (the automatic weight may leave it out)
        (root / "spec.json").write_text(spec.pretty_json())
        a = _adata()
        good = {k: _section(k, root / "good", a, k) for k in READERS}
        run = root / "run"
        assert main(["fit", str(root / "spec.json"), *good["h5ad"], "-o", str(run), "-k", "3", *FAST]) == 0
    return {"root": root, "spec": root / "spec.json", "good": good, "adata": a, "run": run}


def partials(root: Path) -> list[Path]:
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


# Shared fixtures: a test module imports them by name (pytest uses imported fixtures).
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bad"))


@pytest.fixture(autouse=True)
def _env(world, monkeypatch):
    monkeypatch.setenv("STMM_PROGRESS", "0")
    monkeypatch.setenv("STMM_CACHE_DIR", str(world["root"] / "cache"))
