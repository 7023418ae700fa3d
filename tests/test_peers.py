"""Peer packages (GraphST, BANKSY) as benchmark recipes: listed always, one message without the ``peers`` extra,
and (when installed) each wrapper runs on a tiny synthetic section."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stmm_core.benchmark.pipelines import select

PEERS = ("graphst-package", "banksy-package")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-domain synthetic section (no image), written once: (path, Section)."""
    from stmm_core.pipeline.run import load_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    path = tmp_path_factory.mktemp("peers") / "tiny.h5ad"
    make_synthetic_adata(n_spots=240, n_genes=150, n_domains=3, seed=2, image=False).write_h5ad(path)
    return path, load_section(path)


def _gmm():
    from stmm_core.plugins import get_catalogue

    return get_catalogue().get("task", "gmm").build({})


def _hide(monkeypatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] in modules else real(name, *a, **k))


def test_peer_recipes_are_listed_and_point_at_importable_wrappers():
    from stmm_core.recipes import all_recipes

    recipes = all_recipes()
    for name in PEERS:
        rec = recipes[name]
        assert rec["extra"] == "peers" and rec["requires"] and rec["spec"]["components"]["task"]["name"] == "gmm"
        module, _, attr = rec["domains_method"].partition(":")
        assert importlib.util.find_spec(module) is not None  # the wrapper itself never needs the packages
    pipes = select(list(PEERS), [])
    assert [p.name for p in pipes] == list(PEERS)
    assert all(p.baseline and p.domains_method for p in pipes if p.error is None)


def test_without_the_extra_one_message_names_pip_install(monkeypatch, tiny, tmp_path, capsys):
    from stmm_core.cli.main import main

    _hide(monkeypatch, "GraphST", "banksy")
    pipes = select(list(PEERS), [])
    for p in pipes:
        assert p.spec is None and "pip install .[peers]" in p.error and p.name in p.error
    rc = main(["benchmark", "domains", "-p", "graphst-package", "-d", str(tiny[0]), "--label", "domain",
               "--seeds", "1", "--work", str(tmp_path / "w"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pip install .[peers]" in err[-1] and "Traceback" not in "\n".join(err)
    # the wrapper checks too, when called directly
    from stmm_core.errors import MissingDependency
    from stmm_peers import graphst_pkg

    with pytest.raises(MissingDependency, match=r"pip install \.\[peers\]"):
        graphst_pkg.cluster_domains(tiny[1], n_domains=3, seed=0, task=_gmm())


def test_peer_recipe_is_refused_by_fit_with_one_message():
    from stmm_core.composing import compose_spec
    from stmm_core.errors import StmmError

    with pytest.raises(StmmError, match="stmm benchmark domains -p graphst-package"):
        compose_spec("graphst-package")


def test_graphst_package_on_a_tiny_section(tiny):
    pytest.importorskip("GraphST")
    pytest.importorskip("ot")
    pytest.importorskip("skmisc")
    from stmm_core.metrics import clustering_scores
    from stmm_peers.graphst_pkg import cluster_domains

    _, section = tiny
    labels, info = cluster_domains(section, n_domains=3, seed=0, task=_gmm(), epochs=30, radius=6)
    assert labels.shape == (section.n_spots,) and labels.dtype == np.int64 and len(np.unique(labels)) <= 3
    assert info["package"] == "GraphST" and info["epochs"] == 30 and info["unrefined_labels"].shape == labels.shape
    ari = clustering_scores(section.obs["domain"].to_numpy(), labels)["ari"]
    assert ari > 0.3, ari  # three well-separated synthetic domains


def test_graphst_package_with_a_sparse_adjacency_is_the_same_fit(tiny):
    """graphst-package-sparse hands the package its propagation matrix as a torch sparse tensor: same result."""
    pytest.importorskip("GraphST")
    pytest.importorskip("ot")
    pytest.importorskip("skmisc")
    from stmm_core.recipes import all_recipes
    from stmm_peers.graphst_pkg import cluster_domains

    _, section = tiny
    dense, d_info = cluster_domains(section, n_domains=3, seed=1, task=_gmm(), epochs=15, radius=6)
    sparse, s_info = cluster_domains(section, n_domains=3, seed=1, task=_gmm(), epochs=15, radius=6,
                                     sparse_adj=True)
    assert s_info["sparse_adj"] and not d_info["sparse_adj"]
    assert np.array_equal(dense, sparse) and np.array_equal(d_info["unrefined_labels"], s_info["unrefined_labels"])
    assert all_recipes()["graphst-package-sparse"]["domains_method"].endswith(":cluster_domains_sparse")


def test_banksy_package_row_in_the_domains_benchmark(tiny, tmp_path):
    pytest.importorskip("banksy")
    pytest.importorskip("igraph")
    from stmm_core.benchmark.api import run_benchmark

    outcome = run_benchmark("domains", pipelines=["banksy-package", "expression-gmm"], datasets=[str(tiny[0])],
                            label="domain", seeds=1, out_dir=tmp_path, work_dir=tmp_path / "w", progress=False,
                            log=lambda m: None)
    rows = {r.pipeline: r for r in outcome.result.rows}
    row = rows["banksy-package"]
    assert row.status == "ok", row.error
    assert row.details["package"] == "pybanksy" and row.details["k"] == 3 and row.details["lambda"] == 0.2
    assert row.metrics["ari"] > 0.3 and rows["expression-gmm"].status == "ok"
    assert any("-package rows" in n for n in outcome.result.notes)
