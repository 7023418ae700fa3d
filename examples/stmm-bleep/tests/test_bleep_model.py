"""The bleep model alone (no CLI): trained on synthetic sections whose image colour and expression both follow a
hidden domain, it must predict held-out expression better than the training mean, rank a spot's own expression
above chance, be reproducible with its seed, and reload from its run folder with identical outputs.

Run with stmm installed: ``pytest examples/stmm-bleep/tests`` (a few seconds on one CPU core).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Three interleaved thirds of one synthetic section (same domains, same image), as separate sections."""
    from stmm_core.data.readers import read_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    folder = tmp_path_factory.mktemp("bleep-sections")
    adata = make_synthetic_adata(n_spots=324, n_genes=80, n_domains=4, seed=3, image_scale=0.2, mean_counts=20.0,
                                 marker_fraction=0.5, dispersion=10.0)
    out = []
    for i in range(3):
        part = adata[i::3].copy()
        path = folder / f"part{i}.h5ad"
        part.write_h5ad(path)
        out.append(read_section(path))
    return out


def _spec(**train):
    """A ``bleep`` spec (the family is registered as ``pip install`` would, when this checkout is not installed)."""
    from stmm_core.plugins import get_registry
    from stmm_core.spec import parse_spec

    reg = get_registry()
    if "bleep" not in reg.families:
        import stmm_bleep.plugin

        reg.register_module(stmm_bleep.plugin, name="bleep", package="stmm-bleep")
    defaults = {"epochs": 30, "n_targets": 40, "n_eval_hvg": 10, "k": 10, "batch_size": 64}
    return parse_spec({"pipeline": "bleep", "components": {"image": {"name": "stain-stats"},
                                                          "gene": {"name": "hvg", "params": {"n_top_genes": 40}}},
                       "train": {**defaults, **train}})


def _pearson_per_gene(pred: np.ndarray, true: np.ndarray) -> float:
    p, t = pred - pred.mean(0), true - true.mean(0)
    ok = (t ** 2).sum(0) > 0
    r = (p * t).sum(0)[ok] / np.sqrt((p ** 2).sum(0)[ok] * (t ** 2).sum(0)[ok] + 1e-12)
    return float(r.mean())


def test_bleep_learns_predicts_scores_and_reloads(sections, single_thread):
    from stmm_bleep.genes import log1p_targets
    from stmm_bleep.model import BleepModel

    train, test = sections[:2], sections[2]
    spec = _spec()
    pipe = BleepModel.fit(spec, train)
    assert len(pipe.targets) == 40 and set(pipe.genes["eval_hvg"]) <= set(pipe.targets)
    pred = pipe.predict_expression(test)
    truth = log1p_targets(test, pipe.targets, spec.train.target_sum)
    assert pred.shape == truth.shape and pred.dtype == np.float32 and np.isfinite(pred).all()
    mean = np.concatenate([log1p_targets(s, pipe.targets, 1e4) for s in train]).mean(0)
    mse_model, mse_mean = float(((pred - truth) ** 2).mean()), float(((mean - truth) ** 2).mean())
    assert mse_model < 0.6 * mse_mean, (mse_model, mse_mean)  # 0.15 vs 0.36 when written
    hvg = [pipe.targets.index(g) for g in pipe.genes["eval_hvg"]]  # the domain markers among the targets
    r_hvg = _pearson_per_gene(pred[:, hvg], truth[:, hvg])
    assert r_hvg > 0.6, r_hvg  # 0.84 when written

    scores = pipe.score_image_expression(test)
    n = test.n_spots
    assert scores.shape == (n, n)
    rank = (scores >= np.diag(scores)[:, None]).sum(1)
    assert (rank <= 5).mean() > 3 * 5 / n  # own expression in the top 5 far above chance (5/N)
    emb = pipe.embed(test)
    assert emb.shape == (n, spec.train.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    again = BleepModel.fit(spec, train)  # same seed: same model, bit for bit
    np.testing.assert_array_equal(again.predict_expression(test), pred)

    tensors, pre = pipe.state()
    loaded = BleepModel.from_state(spec, {k: v.copy() for k, v in tensors.items()}, json.loads(json.dumps(pre)))
    np.testing.assert_array_equal(loaded.predict_expression(test), pred)
    np.testing.assert_array_equal(loaded.score_image_expression(test), scores)


def test_prediction_reads_only_the_image_and_scoring_needs_the_genes(sections, single_thread):
    from stmm_bleep.model import BleepModel
    from stmm_core.errors import DataError

    pipe = BleepModel.fit(_spec(epochs=2), sections[:2])
    other = sections[2]
    renamed = type(other)(**{**other.__dict__, "gene_names": other.gene_names.str.lower()})
    np.testing.assert_array_equal(pipe.predict_expression(renamed), pipe.predict_expression(other))
    with pytest.raises(DataError, match="gene"):  # the expression side is matched by gene name
        pipe.score_image_expression(renamed)


@pytest.fixture
def single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
