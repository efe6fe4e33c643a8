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
    BEACON_KINDS,
    BEHAVIOUR_NAMES,
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
    identity_scale: float = 4.0  # identity vs behaviour in the distance
    # "leaf" keeps fleets apart where "eom" tends to merge them with their neighbours into
    # one large cluster (measured on the evaluation scenarios, docs/clustering.md)
    selection: str = "leaf"
    core_dist_n_jobs: int = 1  # hdbscan's default 4 oversubscribes small machines
    stack_only_factor: float = 0.3  # a shared stack-only device key counts this much
    # A token becomes a beacon of risky clusters when at least this many accounts, and this
    # share of the clustered accounts that have it, are in risky clusters (BeaconTable).
    beacon_min_accounts: int = 3
    beacon_exclusivity: float = 0.9
    # ... and at least this share of *all* accounts with the token, clustered or not (HDBSCAN
    # leaves part of a fleet as noise; a carrier's CGNAT /24 is mostly unclustered users)
    beacon_min_share: float = 0.3
    # membership given to an account HDBSCAN left as noise that carries an identifier its
    # cluster has to itself (absorb_by_identifiers)
    absorbed_probability: float = 0.5


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
    # the account's tokens of BEACON_KINDS (devices that are only a client stack left out)
    beacon_tokens: list[npt.NDArray[np.uint64]]
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
    for n, (account_id, p) in enumerate(accounts, 1):
        if minute_of(p.last_seen) < since:
            continue
        ids.append(account_id)
        account = account_tokens(p, since)
        tokens.append(account)
        rows.append(behaviour(p, now))
        hours.append(list(p.hours))
        a = previous.get(account_id)
        prev.append(a.cluster_id if a else None)
        if n % 200 == 0:
            yield None
    yield None  # the vectorised tail below takes ~1 s per 100k accounts
    yield assemble_snapshot(now, params, ids, tokens,
                            np.array(rows, dtype=np.float64), np.array(hours, dtype=np.float64),
                            prev)


_KIND_NAMES = [k for k, *_ in KINDS]
_BEACON_INDEX = [_KIND_NAMES.index(k) for k in BEACON_KINDS]


def assemble_snapshot(now: float, params: ClusterParams, ids: list[str],
                      tokens: list[list[npt.NDArray[np.uint64]]], behaviour_rows: F64Array,
                      hours: F64Array, previous: list[str | None]) -> Snapshot:
    """The part of a snapshot that needs every account at once (identifier rarity and the
    identity rows weighted by it), from per-account tokens (per kind, as ``account_tokens``
    gives them), behaviour rows and hour-of-day counts. The batch job calls this too, so the
    service and the job hand HDBSCAN the same matrix for the same accounts."""
    rarity = Rarity.fit(tokens)
    ident = identity_matrix(tokens, rarity)
    beh = behaviour_rows.reshape(-1, len(BEHAVIOUR_NAMES))
    device_kind = _KIND_NAMES.index("device")
    signature_kind = _KIND_NAMES.index("signature")
    return Snapshot(
        now=now, params=params, account_ids=ids,
        features=np.hstack([ident, beh]), rarity=rarity,
        device_tokens=[t[device_kind] for t in tokens],
        stack_only=[stack_only_devices(t) for t in tokens],
        signature_tokens=[t[signature_kind] for t in tokens],
        beacon_tokens=[np.concatenate([t[k][~stack_only_devices(t)] if k == device_kind
                                       else t[k] for k in _BEACON_INDEX]) for t in tokens],
        hours=hours.reshape(-1, 24),
        daily_volume=np.expm1(beh[:, 0] * np.log1p(1000)) if len(beh) else np.zeros(0),
        anonymized=beh[:, 5] if len(beh) else np.zeros(0),
        age_days=np.expm1(beh[:, 6] * np.log1p(90)) if len(beh) else np.zeros(0),
        regularity=beh[:, 3] if len(beh) else np.zeros(0),
        previous=previous,
    )


def scaled(features: F64Array, params: ClusterParams) -> F64Array:
    """The space HDBSCAN sees: identity dims weighted against behaviour dims."""
    out = features.copy()
    out[:, :IDENTITY_DIMS] *= params.identity_scale
    return out


@dataclass(frozen=True)
class BeaconTable:
    """For identifier tokens shared inside clusters: how many members of each cluster have
    them. Which tokens become beacons depends on which clusters are risky, which the serving
    side decides with its policy (``beacons_for``)."""

    tokens: npt.NDArray[np.uint64]  # sorted; a token repeats once per cluster that has it
    clusters: npt.NDArray[np.intp]  # index into the model's label_ids
    counts: npt.NDArray[np.int64]  # members of that cluster with the token
    df: npt.NDArray[np.int64]  # accounts with the token at refit, clustered or not

    @classmethod
    def empty(cls) -> BeaconTable:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0, np.int64),
                   np.zeros(0, np.int64))

    def beacons_for(self, risky: npt.NDArray[np.bool_], cluster_ids: tuple[str, ...],
                    params: ClusterParams) -> dict[int, str]:
        """Tokens that risky clusters have (nearly) to themselves: at least
        ``beacon_exclusivity`` of the clustered accounts with the token, and at least
        ``beacon_min_share`` of all accounts with it, are in risky clusters; each links to the
        risky cluster holding most of them (a fleet split into clusters links through all)."""
        if not len(self.tokens) or not risky.any():
            return {}
        starts = np.flatnonzero(np.r_[True, self.tokens[1:] != self.tokens[:-1]])
        clustered = np.add.reduceat(self.counts, starts)
        risky_counts = np.where(risky[self.clusters], self.counts, 0)
        in_risky = np.add.reduceat(risky_counts, starts)
        out: dict[int, str] = {}
        for g, start in enumerate(starts):
            if (in_risky[g] < params.beacon_min_accounts
                    or in_risky[g] < params.beacon_exclusivity * clustered[g]
                    or in_risky[g] < params.beacon_min_share * self.df[start]):
                continue
            stop = starts[g + 1] if g + 1 < len(starts) else len(self.tokens)
            best = start + int(np.argmax(risky_counts[start:stop]))
            out[int(self.tokens[start])] = cluster_ids[self.clusters[best]]
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
    label_ids: tuple[str, ...]  # cluster index -> stable cluster id
    clusters: dict[str, ClusterProfile]
    members: dict[str, Assignment]  # every account in the fit that landed in a cluster
    account_ids: tuple[str, ...]  # the fitted accounts, in training-row order
    labels: npt.NDArray[np.intp]  # each fitted account's cluster index (-1: noise)
    noise_accounts: int
    schema_version: int = FEATURE_SCHEMA_VERSION
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # which clusters share which identifier tokens (namespaced, see features.request_tokens);
    # the serving side turns it into beacons once it knows which clusters are risky
    beacons: BeaconTable = field(default_factory=BeaconTable.empty)
    # HDBSCAN label -> cluster index (fragments of one fleet are merged, see merge_fragments)
    label_groups: tuple[int, ...] = ()

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


def beacon_table(labels: npt.NDArray[np.intp], snapshot: Snapshot) -> BeaconTable:
    """Count, per (token, cluster), the members that have the token (tokens on fewer than
    ``beacon_min_accounts`` accounts are left out: they could never be beacons)."""
    clustered = np.flatnonzero(labels != NOISE)
    arrays = [snapshot.beacon_tokens[i] for i in clustered]
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.uint64)
    if not len(tokens):
        return BeaconTable.empty()
    owner = np.repeat(labels[clustered], [len(a) for a in arrays])
    # an account's tokens are distinct (sets, kinds salted apart): count accounts per pair
    order = np.lexsort((owner, tokens))
    tokens, owner = tokens[order], owner[order]
    starts = np.flatnonzero(np.r_[True, (tokens[1:] != tokens[:-1]) | (owner[1:] != owner[:-1])])
    counts = np.diff(np.r_[starts, len(tokens)])
    tokens, owner = tokens[starts], owner[starts]
    df = snapshot.rarity.df(tokens)
    keep = df >= snapshot.params.beacon_min_accounts
    return BeaconTable(tokens[keep], owner[keep].astype(np.intp), counts[keep].astype(np.int64),
                       df[keep].astype(np.int64))


def merge_fragments(labels: npt.NDArray[np.intp], snapshot: Snapshot) -> npt.NDArray[np.intp]:
    """HDBSCAN label -> cluster index, merging clusters that are pieces of one fleet.

    Leaf selection keeps fleets apart from their neighbours but may cut one homogeneous fleet
    into pieces. Pieces that hold (nearly) all the clustered accounts with some identifier
    (a device id, an address, a /24, a prompt template — the beacon kinds), each at least
    ``beacon_min_accounts`` of them, are one operator's and become one cluster."""
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    parent = list(range(n_labels))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    table = beacon_table(labels, snapshot)
    params = snapshot.params
    if len(table.tokens):
        starts = np.flatnonzero(np.r_[True, table.tokens[1:] != table.tokens[:-1]])
        ends = np.r_[starts[1:], len(table.tokens)]
        for start, stop in zip(starts, ends, strict=True):
            if stop - start < 2:
                continue
            counts = table.counts[start:stop]
            big = counts >= params.beacon_min_accounts
            held = counts[big].sum()
            if (big.sum() >= 2 and held >= params.beacon_exclusivity * counts.sum()
                    and held >= params.beacon_min_share * table.df[start]):
                first, *rest = (find(int(c)) for c in table.clusters[start:stop][big])
                for other in rest:
                    parent[other] = first
    roots = [find(x) for x in range(n_labels)]
    index = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return np.array([index[r] for r in roots], dtype=np.intp)


def absorb_by_identifiers(labels: npt.NDArray[np.intp], snapshot: Snapshot
                          ) -> npt.NDArray[np.intp]:
    """Labels with noise accounts joined to the cluster that has one of their identifiers
    (beacon kinds) to itself, as ``BeaconTable.beacons_for`` would link their requests:
    HDBSCAN leaves part of a tight fleet as noise, but one device id or template is one
    operator's."""
    table = beacon_table(labels, snapshot)
    if not len(table.tokens):
        return labels
    n_clusters = int(labels.max()) + 1
    owners = table.beacons_for(np.ones(n_clusters, dtype=bool),
                               tuple(str(i) for i in range(n_clusters)), snapshot.params)
    if not owners:
        return labels
    out = labels.copy()
    for i in np.flatnonzero(labels == NOISE):
        found = Counter(owners[t] for t in snapshot.beacon_tokens[i].tolist() if t in owners)
        if found:
            out[i] = int(found.most_common(1)[0][0])
    return out


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
        cluster_selection_method=params.selection, prediction_data=True,
        core_dist_n_jobs=params.core_dist_n_jobs)
    raw = np.asarray(clusterer.fit_predict(scaled(snapshot.features, params)), dtype=np.intp)
    groups = merge_fragments(raw, snapshot)
    merged = np.where(raw != NOISE, groups[np.maximum(raw, 0)], NOISE) if len(groups) else raw
    labels = absorb_by_identifiers(merged, snapshot)
    probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64).copy()
    probabilities[labels != merged] = params.absorbed_probability
    n_labels = int(groups.max()) + 1 if len(groups) else 0
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
        lineage=lineage, beacons=beacon_table(np.asarray(labels, dtype=np.intp), snapshot),
        label_groups=tuple(int(g) for g in groups))


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
    groups = model.label_groups
    return [Assignment(model.label_ids[groups[label]], round(float(prob), 4))
            if label != NOISE else None
            for label, prob in zip(labels, probabilities, strict=True)]
