"""One small fitted run folder shared by the result.h5ad and report.html tests (fitted once per session)."""

from __future__ import annotations

import numpy as np
import pytest

FAST = {"train.epochs": 5, "image.weights": "random", "image.model": "resnet18", "graph.hidden": [32],
        "gene.n_top_genes": 60}


def _section_file(tmp_path):
    from stmm_core.testing.synthetic import make_synthetic_adata

    a = make_synthetic_adata(n_spots=300, n_genes=80, n_domains=4, seed=2)
    ids = [f"ENSG{j:011d}" for j in range(a.n_vars)]
    symbols = [f"SYM{j}" for j in range(a.n_vars)]
    symbols[1] = symbols[0]  # a duplicated symbol → made unique
    symbols[2] = ""  # missing symbols → the ID
    symbols[3] = None
    a.var.index = ids
    a.var["symbol"] = np.array(symbols, dtype=object)
    a.obs["domain"] = a.obs["domain"].astype(object)
    a.obs.iloc[:5, a.obs.columns.get_loc("domain")] = np.nan  # unlabelled spots
    path = tmp_path / "sec.h5ad"
    a.write_h5ad(path)
    return path, a


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """``(run folder, input AnnData)``: the stereomm recipe (5 epochs, random ResNet-18) with --labels domain."""
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.run import fit_to_dir

    tmp = tmp_path_factory.mktemp("small-run")
    path, a = _section_file(tmp)
    spec = compose_spec("stereomm", None, FAST)
    try:
        import spatialdata  # noqa: F401

        zarr = True  # result.zarr as well (tests/test_spatialdata.py)
    except ImportError:
        zarr = False
    fit_to_dir(spec, path, tmp / "run", n_domains=4, labels="domain", device="cpu", progress=False, zarr=zarr)
    return tmp / "run", a
