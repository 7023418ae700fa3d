"""Behaviour lock for the pipeline families: small graph-fusion and magic fits on synthetic sections with fixed
seeds must keep giving the embeddings / predictions recorded before the families became plug-ins.

Values were recorded with STMM_THREADS=1 on the unchanged code (stmm 0.1.0 layout); a tolerance absorbs
float summation-order differences between machines, not behaviour changes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stmm_core.cli.main import main  # noqa: E402
from magic_tiny import TINY_VIT_MODEL as TINY_MODEL  # noqa: E402

# gene.flavor=seurat: the recipe's HVG ranking when the values were recorded (the recipe moved to seurat_v3 in the
# sixth consensus round; this lock is about the family's code path, not the recipe's defaults)
GF_SETS = ["--set", "train.epochs=8", "--set", "graph.hidden=[16]", "--set", "gene.n_top_genes=40",
           "--set", "gene.flavor=seurat", "-q"]
MAGIC_SETS = TINY_MODEL + ["--set", "train.stage1.epochs=1", "--set", "train.stage1.batch_size=16",
                           "--set", "train.stage2.epochs=1", "--set", "train.stage2.batch_size=16", "-q"]

#: recorded values (see the module docstring)
GF_EXPECTED = {"shape": (120, 32), "abs_mean": 0.15525852151671035,
               "head": [-0.05391818657517433, 0.16876468062400818, -0.0737181007862091, 0.07272965461015701,
                        -0.008395633660256863, 0.2527060806751251]}
MAGIC_EXPECTED = {"shape": (36, 12), "abs_mean": 4.235848382115364,
                  "head": [5.142470359802246, 5.035214424133301, 4.7280120849609375, 4.495274066925049,
                           4.171848773956299, 4.076191425323486]}


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"shape": tuple(x.shape), "abs_mean": float(np.abs(x).mean()), "head": [float(v) for v in x.ravel()[:6]]}


def _write(path, seed, n_spots, n_genes, image_scale=0.5):
    from stmm_core.testing.synthetic import make_synthetic_adata

    make_synthetic_adata(n_spots=n_spots, n_genes=n_genes, n_domains=3, seed=seed,
                         image_scale=image_scale).write_h5ad(path)
    return path


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STMM_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def _check(got: dict, expected: dict) -> None:
    assert got["shape"] == expected["shape"]
    np.testing.assert_allclose(got["abs_mean"], expected["abs_mean"], rtol=1e-5)
    np.testing.assert_allclose(got["head"], expected["head"], rtol=1e-4, atol=1e-5)


def test_graph_fusion_embedding_is_unchanged(quiet_env):
    import anndata as ad

    data = _write(quiet_env / "s.h5ad", 5, 120, 60)
    out = quiet_env / "gf"
    assert main(["run", "stereomm-expression", "--data", str(data), "-o", str(out), "-k", "3", "--seed", "0",
                 "--markers", "0", *GF_SETS]) == 0
    got = _summary(ad.read_h5ad(out / "result.h5ad").obsm["X_stmm"])
    print("graph-fusion", got)
    _check(got, GF_EXPECTED)


def test_magic_prediction_is_unchanged(quiet_env):
    import anndata as ad

    a, b, c = (_write(quiet_env / f"m{i}.h5ad", i, 36, 40) for i in (1, 2, 3))
    run = quiet_env / "magic"
    assert main(["run", "magic-vit", "--data", str(a), str(b), "-o", str(run), *MAGIC_SETS]) == 0
    pred = quiet_env / "pred.h5ad"
    assert main(["predict", str(run), "--data", str(c), "-o", str(pred)]) == 0
    got = _summary(ad.read_h5ad(pred).X)
    print("magic", got)
    _check(got, MAGIC_EXPECTED)


#: spec.json files written by stmm 0.1.0 (before families were plug-ins) and their hashes then
SPECS_010 = {"stereomm.json": "fe60f1c41eb3713248c534ea7987fe0b4025cd70ac22339335ac03425f6f1de5",
             "magic.json": "c321162d9deed8dcdfff914d352e1f13c2d7482b87ecfd47027744123c589079"}


@pytest.mark.parametrize("name", sorted(SPECS_010))
def test_spec_files_of_0_1_0_load_with_their_hash(name):
    import json
    from pathlib import Path

    from stmm_core.spec import load_spec

    path = Path(__file__).parent / "fixtures" / "spec_0.1.0" / name
    spec = load_spec(path)
    assert spec.hash() == SPECS_010[name]
    assert json.loads(spec.pretty_json()) == json.loads(path.read_text())  # re-written byte-equivalent


def test_unknown_family_is_one_message():
    from stmm_core.errors import SpecError
    from stmm_core.spec import parse_spec

    with pytest.raises(SpecError, match="unknown pipeline 'magik'; did you mean 'magic'.*Installed pipeline families"):
        parse_spec({"pipeline": "magik", "components": {}})
