"""The HDBSCAN fit backends (core/fitting.py): the k-NN backend gives hdbscan's clusters on
well-separated data, repeatably, and a clusterer that ``approximate_predict`` accepts."""

from dataclasses import replace

import hdbscan
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.core.clustering import ClusterParams, Snapshot, fit_model, predict_rows
from ringfence.service.core.features import Rarity
from ringfence.service.core.fitting import (
    backend_for,
    fit_clusterer,
    knn_available,
    should_warm_up,
)

needs_knn = pytest.mark.skipif(not knn_available(), reason="fast-hdbscan is not installed")


def blobs(
    seed: int, n_blobs: int = 12, per_blob: int = 150, noise: int = 600, dims: int = 23
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(n_blobs, dims))
    points = [c + rng.normal(scale=0.4, size=(per_blob, dims)) for c in centres]
    points.append(rng.uniform(-25, 25, size=(noise, dims)))
    return np.vstack(points)


def test_auto_picks_the_knn_backend_only_for_large_fits() -> None:
    params = ClusterParams(backend="auto", knn_min_accounts=1000)
    assert backend_for(999, params) == "hdbscan"
    assert backend_for(1000, params) == ("knn" if knn_available() else "hdbscan")
    assert backend_for(10**6, replace(params, backend="hdbscan")) == "hdbscan"


@needs_knn
def test_the_knn_kernels_are_compiled_ahead_of_the_first_fit_that_needs_them() -> None:
    auto = ClusterParams(backend="auto", knn_min_accounts=20_000)
    assert not should_warm_up(auto, 9_999)
    assert should_warm_up(auto, 10_000)  # half way to the first k-NN fit
    assert should_warm_up(replace(auto, backend="knn"), 0)  # asked for: at start
    assert not should_warm_up(replace(auto, backend="hdbscan"), 10**6)


def test_an_unknown_backend_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="backend"):
        backend_for(10, ClusterParams(backend="sklearn"))


@needs_knn
def test_knn_fit_finds_the_exact_fits_clusters_and_predicts() -> None:
    x = blobs(3)
    exact = fit_clusterer(x, ClusterParams(backend="hdbscan", selection="eom"))
    knn = fit_clusterer(x, ClusterParams(backend="knn", selection="eom"))
    assert int(knn.labels_.max()) + 1 == int(exact.labels_.max()) + 1 == 12
    # the same clusters; the approximate neighbours move some points at the blobs' edges
    # between a cluster and noise (measured ARI 0.93 overall, 1.0 on points both cluster)
    assert adjusted_rand_score(exact.labels_, knn.labels_) >= 0.9
    both = (exact.labels_ >= 0) & (knn.labels_ >= 0)
    assert adjusted_rand_score(exact.labels_[both], knn.labels_[both]) >= 0.99
    # prediction data built on the k-NN fit: training points fall back into their clusters,
    # a far-away point is noise
    clustered = np.flatnonzero(knn.labels_ >= 0)
    labels, probabilities = hdbscan.approximate_predict(knn, x[clustered])
    assert np.mean(labels == knn.labels_[clustered]) >= 0.98
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    far, _ = hdbscan.approximate_predict(knn, np.full((1, x.shape[1]), 500.0))
    assert far.tolist() == [-1]


@needs_knn
def test_knn_fit_is_repeatable_and_follows_the_seed_only() -> None:
    x = blobs(5)
    params = ClusterParams(backend="knn")
    a, b = fit_clusterer(x, params), fit_clusterer(x, params)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.probabilities_, b.probabilities_)


@needs_knn
def test_a_knn_model_goes_through_fit_model_the_model_store_and_predict(tmp_path) -> None:
    rng = np.random.default_rng(1)
    n = 300
    x = np.repeat(rng.normal(size=(3, 23)) * 3, n // 3, axis=0)
    x += rng.normal(scale=0.05, size=(n, 23))
    empty = [np.zeros(0, np.uint64)] * n
    snapshot = Snapshot(
        now=1e9,
        params=ClusterParams(backend="knn"),
        account_ids=[f"a{i}" for i in range(n)],
        features=x,
        rarity=Rarity.fit([]),
        device_tokens=empty,
        stack_only=[np.zeros(0, bool)] * n,
        signature_tokens=empty,
        beacon_tokens=empty,
        hours=np.ones((n, 24)),
        daily_volume=np.ones(n),
        anonymized=np.zeros(n),
        age_days=np.full(n, 100.0),
        regularity=np.full(n, 0.5),
        previous=[None] * n,
    )
    model = fit_model(snapshot)
    assert len(model.clusters) == 3 and model.noise_accounts <= 10
    store = ModelStore(tmp_path, bytes(range(32)))
    store.save(model, previous="")
    loaded, _ = store.load_latest()
    placed = predict_rows(loaded, x)
    fitted = [model.members.get(f"a{i}") for i in range(n)]
    same = [
        p.cluster_id == f.cluster_id
        for p, f in zip(placed, fitted, strict=True)
        if p is not None and f is not None
    ]
    assert len(same) >= n - 10 and all(same)
