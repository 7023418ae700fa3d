"""Task plug-in: GMM (mclust EEE stand-in), Leiden with a target K, KMeans."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from stmm_core.errors import DataError, SpecError
from stmm_core.interfaces import Task
from stmm_tasks.clustering import GMMClustering, KMeansClustering, LeidenClustering, relabel_by_size
from stmm_tasks.params import GMMParams, KMeansParams, LeidenParams


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=400, centers=5, n_features=24, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


def all_tasks():
    return [
        GMMClustering(GMMParams()),
        GMMClustering(GMMParams(pca=None, covariance="full")),
        LeidenClustering(LeidenParams()),
        KMeansClustering(KMeansParams()),
        KMeansClustering(KMeansParams(pca=5)),
    ]


def test_params():
    assert GMMParams().covariance == "tied" and GMMParams().pca == 20
    assert LeidenParams().n_neighbors == 15 and KMeansParams().n_init == 10
    with pytest.raises(ValidationError):
        LeidenParams(resolution_min=3.0, resolution_max=1.0)
    with pytest.raises(ValidationError):
        GMMParams(covariance="EEE")
    with pytest.raises(ValidationError):
        KMeansParams(n_init=0)


@pytest.mark.parametrize("task", all_tasks(), ids=lambda t: f"{type(t).__name__}")
def test_recovers_blobs(task, blobs):
    x, y = blobs
    assert isinstance(task, Task)
    labels = task.run(x, 5, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (400,)
    assert set(labels.tolist()) == set(range(5))
    assert adjusted_rand_score(y, labels) > 0.99
    assert "warning" not in task.last_info
    # numbered by decreasing size
    assert np.all(np.diff(np.bincount(labels)) <= 0)


@pytest.mark.parametrize("task", all_tasks(), ids=lambda t: f"{type(t).__name__}")
def test_deterministic_for_seed(task):
    x, _ = make_blobs(n_samples=300, centers=4, n_features=8, cluster_std=3.0, random_state=1)
    a = task.run(x, 4, seed=7)
    b = task.run(x.copy(), 4, seed=7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("task", all_tasks(), ids=lambda t: f"{type(t).__name__}")
def test_k_errors(task, blobs):
    x, _ = blobs
    with pytest.raises(DataError, match="K larger than the spots"):
        task.run(x[:10], 11)
    with pytest.raises(SpecError):
        task.run(x, 0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        task.run(bad, 3)
    with pytest.raises(DataError):
        task.run(x[:, 0], 3)


@pytest.mark.parametrize("k", [3, 5, 8])
def test_leiden_reaches_requested_k(k):
    x, _ = make_blobs(n_samples=600, centers=k, n_features=10, cluster_std=1.5, random_state=k)
    task = LeidenClustering(LeidenParams())
    labels = task.run(x, k, seed=0)
    assert labels.max() + 1 == k and task.last_info["n_found"] == k
    assert "warning" not in task.last_info


def test_leiden_extends_upper_bound():
    x, _ = make_blobs(n_samples=500, centers=5, n_features=10, cluster_std=2.0, random_state=3)
    task = LeidenClustering(LeidenParams(resolution_min=0.01, resolution_max=0.02))
    labels = task.run(x, 12, seed=0)
    assert labels.max() + 1 == 12 and task.last_info["resolution"] > 0.02


def test_leiden_unreachable_k_returns_closest_with_warning(blobs):
    x, _ = blobs  # 5 well-separated blobs: the kNN graph has 5 components, so K=2 is impossible
    task = LeidenClustering(LeidenParams(max_steps=8))
    labels = task.run(x, 2, seed=0)
    assert labels.max() + 1 == task.last_info["n_found"] >= 3
    assert "could not reach 2" in task.last_info["warning"]


def test_k_equals_one_and_n():
    x, _ = make_blobs(n_samples=30, centers=3, n_features=4, random_state=0)
    assert np.all(GMMClustering(GMMParams()).run(x, 1) == 0)
    assert np.all(KMeansClustering(KMeansParams()).run(x, 1) == 0)
    assert len(set(KMeansClustering(KMeansParams()).run(x, 30).tolist())) == 30


def test_relabel_by_size():
    labels = np.array([7, 7, 2, 2, 2, 9])
    np.testing.assert_array_equal(relabel_by_size(labels), [1, 1, 0, 0, 0, 2])
    np.testing.assert_array_equal(relabel_by_size(np.array([3, 1])), [1, 0])  # tie: smaller label first


def test_subsample_fit_assigns_every_spot_and_agrees_with_full_fit():
    from sklearn.metrics import adjusted_rand_score

    from stmm_tasks.clustering import GMMClustering, KMeansClustering, LeidenClustering
    from stmm_tasks.params import GMMParams, KMeansParams, LeidenParams

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(4, 8))
    truth = rng.integers(0, 4, size=3000)
    x = (centres[truth] + rng.normal(size=(3000, 8))).astype(np.float32)
    for task, full in ((GMMClustering(GMMParams(max_fit=400, pca=None)), GMMClustering(GMMParams(pca=None))),
                       (KMeansClustering(KMeansParams(max_fit=400)), KMeansClustering(KMeansParams())),
                       (LeidenClustering(LeidenParams(max_fit=500)), LeidenClustering(LeidenParams()))):
        sub = task.run(x, 4, seed=0)
        assert sub.shape == (3000,) and task.last_info["fitted_on"] <= 500
        assert adjusted_rand_score(truth, sub) > 0.95
        assert adjusted_rand_score(full.run(x, 4, seed=0), sub) > 0.95
