"""The HDBSCAN fit behind ``clustering.fit_model``, with two backends that give the same kind
of result: an ``hdbscan.HDBSCAN`` with prediction data, so ``approximate_predict`` places new
accounts either way.

- ``"hdbscan"``: hdbscan's own exact fit (Borůvka over a KD-tree, then
  ``generate_prediction_data``). Both parts slow down steeply with size and dimension: 166 s
  of CPU at 200k accounts × 23 dims, 8.7× the k-NN fit (docs/benchmarks-clustering.md).
- ``"knn"``: the mutual-reachability minimum spanning tree over an approximate k-nearest-
  neighbour graph (pynndescent, seeded), computed by fast-hdbscan; then hdbscan's own code turns
  the tree into the condensed tree, labels and probabilities, so cluster selection and
  prediction are hdbscan's. The prediction data reuses the core distances of the fit instead of
  querying every training point again. Needs the ``fast-hdbscan`` package (and numba, which
  compiles its kernels once per process: 25–36 s, paid by the first large fit of the server's
  long-lived refit worker; ``warm_up`` pays it ahead); without it this backend falls back to
  ``"hdbscan"``.
- ``"auto"``: ``"knn"`` from ``knn_min_accounts`` accounts, ``"hdbscan"`` below.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Protocol

import hdbscan
import numpy as np
import numpy.typing as npt
from hdbscan._hdbscan_linkage import label as single_linkage
from hdbscan.hdbscan_ import _tree_to_labels
from hdbscan.prediction import PredictionData

log = logging.getLogger(__name__)

F64Array = npt.NDArray[np.float64]
BACKENDS = ("auto", "hdbscan", "knn")


class FitParams(Protocol):
    """The fields of ``ClusterParams`` a fit reads."""

    @property
    def min_cluster_size(self) -> int: ...
    @property
    def min_samples(self) -> int: ...
    @property
    def selection(self) -> str: ...
    @property
    def core_dist_n_jobs(self) -> int: ...
    @property
    def backend(self) -> str: ...
    @property
    def knn_min_accounts(self) -> int: ...
    @property
    def knn_neighbors(self) -> int: ...
    @property
    def seed(self) -> int: ...


@functools.cache
def knn_available() -> bool:
    """Whether fast-hdbscan is installed, found without importing it: the import compiles or
    loads numba kernels while holding the GIL (1 s with numba's cache, 33 s without, measured
    on the 2-vCPU dev VM), so it must only ever happen in the refit worker, never on the
    serving process that asks this question (once: the search itself reads directories)."""
    return importlib.util.find_spec("fast_hdbscan") is not None


def backend_for(n_accounts: int, params: FitParams) -> str:
    """The backend a fit of ``n_accounts`` uses: "auto" picks "knn" from
    ``knn_min_accounts`` accounts (below, the exact fit takes seconds and numba's compilation
    would cost more than it saves); "knn" without fast-hdbscan installed falls back to
    "hdbscan"."""
    if params.backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {params.backend!r}")
    wanted = params.backend
    if wanted == "auto":
        wanted = "knn" if n_accounts >= params.knn_min_accounts else "hdbscan"
    if wanted == "knn" and not knn_available():
        if params.backend == "knn":
            log.warning("fast-hdbscan is not installed: fitting with hdbscan's exact backend")
        return "hdbscan"
    return wanted


def fit_clusterer(x: F64Array, params: FitParams) -> hdbscan.HDBSCAN:
    """A fitted ``hdbscan.HDBSCAN`` on ``x`` (labels, probabilities, condensed tree and
    prediction data), by the backend ``backend_for`` picks."""
    if backend_for(len(x), params) == "knn":
        try:
            return _fit_knn(x, params)
        except ImportError as exc:  # installed but unusable (e.g. numba missing or too old)
            log.warning("the k-NN backend failed to import (%s): fitting with hdbscan's "
                        "exact backend", exc)
    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=params.min_cluster_size,
        min_samples=params.min_samples,
        cluster_selection_method=params.selection,
        prediction_data=True,
        core_dist_n_jobs=params.core_dist_n_jobs,
    )
    clusterer.fit(x)
    return clusterer


def _use_available_cores() -> None:
    """numba starts one thread per CPU of the machine, not per CPU this process may use
    (taskset, cgroup cpusets): cap it at the latter."""
    import numba

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    numba.set_num_threads(max(1, min(cores or 1, numba.config.NUMBA_NUM_THREADS)))


def _fit_knn(x: F64Array, params: FitParams) -> hdbscan.HDBSCAN:
    from fast_hdbscan.nndescent import compute_mst_from_knn_graph

    _use_available_cores()
    x = np.ascontiguousarray(x, dtype=np.float64)
    k = params.knn_neighbors or max(3 * params.min_samples, 15)
    # (n - 1, 3) edges (a, b, mutual reachability); components the k-NN graph leaves apart are
    # joined by +inf edges, which the condensed tree splits off at lambda 0
    mst, _, core_distances = compute_mst_from_knn_graph(
        x, min_samples=params.min_samples, metric="euclidean", knn_k=k, random_state=params.seed
    )
    mst = np.asarray(mst, dtype=np.float64)
    mst = mst[np.argsort(mst[:, 2], kind="stable")]
    # a cluster joined only by a +inf edge splits off at lambda 0; hdbscan takes 1/lambda as
    # its epsilon (inf, harmless: compared only against cluster_selection_epsilon_max = inf)
    with np.errstate(divide="ignore"):
        labels, probabilities, stabilities, condensed, linkage = _tree_to_labels(
            x,
            single_linkage(mst),
            min_cluster_size=params.min_cluster_size,
            cluster_selection_method=params.selection,
        )
    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=params.min_cluster_size,
        min_samples=params.min_samples,
        cluster_selection_method=params.selection,
        prediction_data=True,
    )
    # the state ``HDBSCAN.fit`` leaves behind
    clusterer._raw_data = x
    clusterer._all_finite = True
    clusterer.labels_ = labels
    clusterer.probabilities_ = probabilities
    clusterer.cluster_persistence_ = stabilities
    clusterer._condensed_tree = condensed
    clusterer._single_linkage_tree = linkage
    clusterer._min_spanning_tree = None
    # min_samples=1 makes its all-points neighbour query trivial (each point finds itself);
    # the real core distances come from the fit
    prediction = PredictionData(
        x, clusterer.condensed_tree_, 1, tree_type="kdtree", metric="euclidean"
    )
    prediction.core_distances = np.asarray(core_distances, dtype=np.float64)
    clusterer._prediction_data = prediction
    return clusterer


def should_warm_up(params: FitParams, accounts: int) -> bool:
    """Whether a long-lived refit worker should compile the k-NN kernels now (``warm_up``):
    at once when the k-NN backend is asked for; with "auto", once the accounts a fit would see
    reach half of ``knn_min_accounts``, so the compilation (25–36 s of one core) is done before
    the first fit that needs it rather than added to it. Never for "hdbscan", nor when
    fast-hdbscan is not installed."""
    if params.backend == "hdbscan" or not knn_available():
        return False
    return params.backend == "knn" or 2 * accounts >= params.knn_min_accounts


def warm_up() -> bool:
    """Compile the k-NN backend's numba kernels in this process (a tiny fit), so the first
    real refit in a long-lived worker does not pay for it. False when the backend is not
    installed."""
    if not knn_available():
        return False
    try:
        from fast_hdbscan.nndescent import compute_mst_from_knn_graph
    except ImportError:
        return False

    _use_available_cores()
    rng = np.random.default_rng(0)
    compute_mst_from_knn_graph(
        rng.normal(size=(200, 4)), min_samples=5, metric="euclidean", knn_k=15, random_state=0
    )
    return True
