"""HDBSCAN clusters of accounts: fit on the active window, place new accounts between fits
with ``approximate_predict``, and keep cluster ids stable across refits.

``build_snapshot`` runs where the profiles live (cheap, incremental); ``fit_model`` is the CPU-
heavy part and runs in a worker process in the server (in-process in replays and tests); the
result is an immutable ``ClusterModel`` that ``ClusterState`` swaps in with one assignment.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import hdbscan
import numpy as np
import numpy.typing as npt

from ringfence.service.core.cluster_profiles import ClusterProfile, profile_cluster
from ringfence.service.core.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    IDENTITY_DIMS,
    KINDS,
    Rarity,
    account_tokens,
    behaviour,
    feature_rows,
    identity_matrix,
    stack_only_devices,
)
from ringfence.service.core.profiles import DAY_MINUTES, AccountProfile, minute_of

F64Array = npt.NDArray[np.float64]
NOISE = -1


@dataclass(frozen=True, slots=True)
class ClusterParams:
    min_cluster_size: int = 10
    min_samples: int = 5
    window_days: float = 7.0  # accounts active in this window are clustered
    identity_scale: float = 2.0  # identity vs behaviour in the distance
    core_dist_n_jobs: int = 1  # hdbscan's default 4 oversubscribes small machines
    stack_only_factor: float = 0.3  # a shared stack-only device key counts this much


@dataclass(frozen=True, slots=True)
class Assignment:
    cluster_id: str
    probability: float


@dataclass
class Snapshot:
    """Everything a fit needs, as plain arrays (picklable to a worker process)."""

    now: float
    params: ClusterParams
    account_ids: list[str]
    features: F64Array
    rarity: Rarity
    device_tokens: list[npt.NDArray[np.uint64]]
    stack_only: list[npt.NDArray[np.bool_]]
    signature_tokens: list[npt.NDArray[np.uint64]]
    hours: F64Array
    daily_volume: F64Array
    anonymized: F64Array
    age_days: F64Array
    regularity: F64Array
    previous: list[str | None]  # each account's cluster id in the previous model


def build_snapshot(accounts: Iterable[tuple[str, AccountProfile]], now: float,
                   params: ClusterParams, previous: dict[str, Assignment],
                   ) -> Iterator[Snapshot | None]:
    """Yields None every 200 accounts (so a caller can give its event loop a turn), then
    the snapshot."""
    since = minute_of(now) - int(params.window_days * DAY_MINUTES)
    ids: list[str] = []
    tokens: list[list[npt.NDArray[np.uint64]]] = []
    rows: list[list[float]] = []
    hours: list[list[int]] = []
    prev: list[str | None] = []
    stack_only: list[npt.NDArray[np.bool_]] = []
    for n, (account_id, p) in enumerate(accounts, 1):
        if minute_of(p.last_seen) < since:
            continue
        ids.append(account_id)
        account = account_tokens(p, since)
        tokens.append(account)
        stack_only.append(stack_only_devices(account))
        rows.append(behaviour(p, now))
        hours.append(list(p.hours))
        a = previous.get(account_id)
        prev.append(a.cluster_id if a else None)
        if n % 200 == 0:
            yield None
    yield None  # the vectorised tail below takes ~1 s per 100k accounts
    rarity = Rarity.fit(tokens)
    ident = identity_matrix(tokens, rarity)
    beh = np.array(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES) - IDENTITY_DIMS)
    device_kind = [k for k, *_ in KINDS].index("device")
    signature_kind = [k for k, *_ in KINDS].index("signature")
    yield Snapshot(
        now=now, params=params, account_ids=ids,
        features=np.hstack([ident, beh]), rarity=rarity,
        device_tokens=[t[device_kind] for t in tokens],
        stack_only=stack_only,
        signature_tokens=[t[signature_kind] for t in tokens],
        hours=np.array(hours, dtype=np.float64).reshape(-1, 24),
        daily_volume=np.expm1(beh[:, 0] * np.log1p(1000)) if len(beh) else np.zeros(0),
        anonymized=beh[:, 5] if len(beh) else np.zeros(0),
        age_days=np.expm1(beh[:, 6] * np.log1p(90)) if len(beh) else np.zeros(0),
        regularity=beh[:, 3] if len(beh) else np.zeros(0),
        previous=prev,
    )


def scaled(features: F64Array, params: ClusterParams) -> F64Array:
    """The space HDBSCAN sees: identity dims weighted against behaviour dims."""
    out = features.copy()
    out[:, :IDENTITY_DIMS] *= params.identity_scale
    return out


@dataclass(frozen=True)
class ClusterModel:
    """One fitted clustering, immutable once built."""

    version: str
    fitted_at: float
    fit_seconds: float
    params: ClusterParams
    rarity: Rarity
    clusterer: hdbscan.HDBSCAN | None  # None when there were too few accounts to fit
    label_ids: tuple[str, ...]  # HDBSCAN label -> stable cluster id
    clusters: dict[str, ClusterProfile]
    members: dict[str, Assignment]  # every account in the fit that landed in a cluster
    account_ids: tuple[str, ...]  # the fitted accounts, in training-row order
    labels: npt.NDArray[np.intp]  # each fitted account's HDBSCAN label (-1: noise)
    noise_accounts: int
    schema_version: int = FEATURE_SCHEMA_VERSION
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def members_of(self, cluster_id: str) -> list[str]:
        """The accounts fitted into a cluster, in training order."""
        if cluster_id not in self.label_ids:
            return []
        label = self.label_ids.index(cluster_id)
        return [self.account_ids[i] for i in np.flatnonzero(self.labels == label)]

    def nearest_members(self, cluster_id: str, row: F64Array, k: int
                        ) -> list[tuple[str, float]]:
        """The ``k`` fitted members of a cluster closest to a feature row (scaled space)."""
        if self.clusterer is None or cluster_id not in self.label_ids:
            return []
        label = self.label_ids.index(cluster_id)
        idx = np.flatnonzero(self.labels == label)
        train = np.asarray(self.clusterer._raw_data)[idx]  # already in the scaled space
        point = scaled(row.reshape(1, -1), self.params)[0]
        distances = np.linalg.norm(train - point, axis=1)
        order = np.argsort(distances, kind="stable")[:k]
        return [(self.account_ids[idx[i]], float(distances[i])) for i in order]


def _match_ids(labels: npt.NDArray[np.intp], previous: list[str | None], n_labels: int
               ) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """Stable ids: a new cluster keeps the id of the old cluster it shares most members with
    (if they overlap by at least half of either), largest overlaps first; others get new ids.
    Lineage lists every old cluster that gave a new one at least 10% of its members."""
    old_sizes = Counter(p for p in previous if p is not None)
    overlaps: list[tuple[int, int, str]] = []
    parents: dict[int, tuple[str, ...]] = {}
    for label in range(n_labels):
        idx = np.flatnonzero(labels == label)
        counts = Counter(previous[i] for i in idx if previous[i] is not None)
        parents[label] = tuple(sorted(o for o, c in counts.items() if c >= 0.1 * len(idx)))
        for old, c in counts.items():
            if c >= 0.5 * len(idx) or c >= 0.5 * old_sizes[old]:
                overlaps.append((c, label, old))
    ids: list[str | None] = [None] * n_labels
    taken: set[str] = set()
    for _, label, old in sorted(overlaps, key=lambda x: (-x[0], x[1], x[2])):
        if ids[label] is None and old not in taken:
            ids[label] = old
            taken.add(old)
    final = [i if i is not None else f"c-{uuid.uuid4().hex[:12]}" for i in ids]
    return final, {final[label]: parents[label] for label in range(n_labels)}


def fit_model(snapshot: Snapshot) -> ClusterModel:
    """Fit HDBSCAN on a snapshot and profile its clusters (CPU-heavy: run off the loop)."""
    started = time.perf_counter()
    params = snapshot.params
    n = len(snapshot.account_ids)
    version = f"m-{int(snapshot.now)}-{uuid.uuid4().hex[:6]}"
    if n < max(params.min_cluster_size * 2, params.min_samples + 1):
        return ClusterModel(version=version, fitted_at=snapshot.now, fit_seconds=0.0,
                            params=params, rarity=snapshot.rarity, clusterer=None, label_ids=(),
                            clusters={}, members={}, account_ids=tuple(snapshot.account_ids),
                            labels=np.full(n, NOISE, dtype=np.intp), noise_accounts=n)
    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=params.min_cluster_size, min_samples=params.min_samples,
        prediction_data=True, core_dist_n_jobs=params.core_dist_n_jobs)
    labels = clusterer.fit_predict(scaled(snapshot.features, params))
    probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64)
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    ids, lineage = _match_ids(labels, snapshot.previous, n_labels)
    clusters: dict[str, ClusterProfile] = {}
    for label in range(n_labels):
        members = np.flatnonzero(labels == label)
        clusters[ids[label]] = profile_cluster(
            ids[label], members, device_tokens=snapshot.device_tokens,
            stack_only=snapshot.stack_only, global_df=snapshot.rarity.df,
            stack_only_factor=params.stack_only_factor,
            signature_tokens=snapshot.signature_tokens, hours=snapshot.hours,
            daily_volume=snapshot.daily_volume, anonymized=snapshot.anonymized,
            age_days=snapshot.age_days, regularity=snapshot.regularity,
            probabilities=probabilities, fitted_at=snapshot.now, lineage=lineage[ids[label]])
    members = {snapshot.account_ids[i]: Assignment(ids[label], round(float(probabilities[i]), 4))
               for i, label in enumerate(labels) if label != NOISE}
    return ClusterModel(
        version=version, fitted_at=snapshot.now, fit_seconds=time.perf_counter() - started,
        params=params, rarity=snapshot.rarity, clusterer=clusterer, label_ids=tuple(ids),
        clusters=clusters, members=members, account_ids=tuple(snapshot.account_ids),
        labels=np.asarray(labels, dtype=np.intp), noise_accounts=int(np.sum(labels == NOISE)),
        lineage=lineage)


def predict(model: ClusterModel, profiles: list[AccountProfile], now: float
            ) -> list[Assignment | None]:
    """Place accounts into the model's clusters without refitting (None: noise)."""
    return predict_rows(model, feature_rows(profiles, now, model.rarity,
                                            model.params.window_days))


def predict_rows(model: ClusterModel, rows: F64Array) -> list[Assignment | None]:
    """``predict`` for feature rows already built (this part may run in another thread: it
    reads only the immutable model)."""
    if model.clusterer is None or not model.label_ids or not len(rows):
        return [None] * len(rows)
    labels, probabilities = hdbscan.approximate_predict(model.clusterer,
                                                        scaled(rows, model.params))
    return [Assignment(model.label_ids[label], round(float(prob), 4)) if label != NOISE
            else None for label, prob in zip(labels, probabilities, strict=True)]
